#!/usr/bin/env bash
# Shows the last lines of the training log (~/xmc_logs/train.log) of one worker or all of them (each line
# prefixed by the worker's host name), optionally following it.
#
#   launch/logs.sh --tpu-name=xmc --zone=us-central2-b [--worker=0] [--follow] [--log=eval]
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name TPU_NAME, --zone ZONE  (or --vm VM, or --hosts H1,H2)
#   --worker WORKER                   all (default) or a worker index (0, 1, ...)
#   --log LOG                         train (default), eval, tensorboard, prepare_coco, ...
#   --lines LINES                     how many lines (default 100)
#   --follow (FOLLOW=1)               keep following (tail -F) until Ctrl-C
#   --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS, --env FILE, --dry-run, --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER=all
LOG=train
LINES=100
parse_args "tpu-name vm hosts zone worker log lines project gcloud-ssh-flags" "follow" "$@"
select_target
[[ $WORKER == all || $WORKER =~ ^[0-9]+$ ]] || die "--worker must be all or a worker index, got '${WORKER}'"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines must be a number, got '${LINES}'"
follow=""
if [[ ${FOLLOW:-0} == 1 ]]; then follow=" -F"; fi
prefix=""
if [[ $WORKER == all ]]; then prefix=" | sed -u \"s/^/[\$(hostname)] /\""; fi
script="log=\$HOME/$(quote "$LOG_DIR")/$(quote "$LOG").log
if [ ! -f \"\$log\" ]; then echo \"\$(hostname): no \$log yet\" >&2; exit 1; fi
tail -n ${LINES}${follow} \"\$log\"${prefix}"

case $TARGET in
  tpu) remote "$WORKER" "$script" ;;
  vm) remote 0 "$script" ;;
  hosts)
    IFS=, read -r -a hosts <<<"$HOSTS"
    if [[ $WORKER == all ]]; then
      for host in "${hosts[@]}"; do remote "$host" "$script" & done
      wait
    else
      ((WORKER < ${#hosts[@]})) || die "--worker=${WORKER} but only ${#hosts[@]} hosts"
      remote "${hosts[WORKER]}" "$script"
    fi ;;
esac
