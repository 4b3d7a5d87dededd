#!/usr/bin/env bash
# TensorBoard on the gs:// workdir: started (detached) on worker 0 of the TPU VM, or on a VM (--vm), and reached
# through an SSH tunnel (open http://localhost:PORT; Ctrl-C closes the tunnel, TensorBoard keeps running there);
# or run here with --local (needs gcloud credentials for gs:// on this machine).
#
#   launch/tensorboard.sh --tpu-name=xmc --zone=us-central2-b --workdir=gs://BUCKET/coco128
#   launch/tensorboard.sh --local --workdir=gs://BUCKET/coco128
#
# Settings (flag or env file variable; see launch/env.example):
#   --workdir WORKDIR                 gs:// workdir, or its parent to compare runs (required)
#   --tpu-name TPU_NAME, --zone ZONE  (or --vm VM, or --local (LOCAL=1))
#   --port PORT                       (default 6006)
#   --remote-dir REMOTE_DIR, --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS
#   --env FILE, --dry-run (print the commands, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT=6006
parse_args "workdir tpu-name vm zone port remote-dir project gcloud-ssh-flags" "local" "$@"
require WORKDIR
[[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, got '${PORT}'"

if [[ ${LOCAL:-0} == 1 ]]; then
  tensorboard=tensorboard
  if [[ -x ${REPO_ROOT}/.venv/bin/tensorboard ]]; then tensorboard=${REPO_ROOT}/.venv/bin/tensorboard; fi
  run "$tensorboard" --logdir="$WORKDIR" --port="$PORT"
  exit 0
fi
select_target
[[ $TARGET != hosts ]] || die "--hosts is not supported here; use --vm or --tpu-name, or ssh -L yourself"
script="$(remote_prelude)
$(remote_cd_checkout)
pkill -u \"\$(id -u)\" -f \"^[^ ]*python[^ ]* [^ ]*tensorboard --logdir\" || true
setsid nohup .venv/bin/tensorboard --logdir=$(quote "$WORKDIR") --port=${PORT} >\"\$log_dir/tensorboard.log\" 2>&1 </dev/null &
echo \"\$(hostname): TensorBoard started, log \$log_dir/tensorboard.log\""
remote 0 "$script"

mapfile -t project < <(gcloud_project_flags)
read -r -a ssh_flags <<<"${GCLOUD_SSH_FLAGS}"
note "tunnel: open http://localhost:${PORT} (Ctrl-C closes it)"
case $TARGET in
  tpu) run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" "${ssh_flags[@]}" --worker=0 \
    -- -N -L "${PORT}:localhost:${PORT}" ;;
  vm) run gcloud compute ssh "$VM" --zone="$ZONE" "${project[@]}" "${ssh_flags[@]}" -- -N -L "${PORT}:localhost:${PORT}" ;;
esac
