#!/usr/bin/env bash
# Starts training on GPUs, detached, log ~/xmc_logs/train.log on each machine; stops a previous run there first
# (SIGTERM: it saves a checkpoint). Re-running the same command resumes from the workdir.
#   one VM (--vm NAME, or one --hosts entry):
#     python -m xmc_gan_jax.main --config=CONFIG --workdir=WORKDIR --expect_platform=gpu [ARGS after --]
#   several nodes (--hosts h1,h2,...; one process per node, reached with plain ssh):
#     ... --multihost --coordinator_address=h1:PORT --num_processes=N --process_id=i --expect_platform=gpu
#
#   launch/gpu_train.sh --vm=xmc-gpu --zone=us-central1-a --workdir=gs://BUCKET/coco128
#   launch/gpu_train.sh --hosts=10.0.0.2,10.0.0.3 --workdir=gs://BUCKET/coco256 --config=configs/coco.py:res=256
#
# Settings (flag or env file variable; see launch/env.example):
#   --vm VM, --zone ZONE              one Compute Engine VM (gcloud compute ssh), or
#   --hosts HOSTS                     comma-separated ssh hosts ([user@]host); the first is process 0
#   --coordinator COORDINATOR         address of process 0 as the other nodes see it (default: the first host)
#   --port PORT                       coordinator port (default 8476)
#   --workdir WORKDIR                 gs:// (required for several nodes; one VM may use a local path)
#   --config CONFIG                   (default configs/coco.py:res=128)
#   --data-dir DATA_DIR, --bert-dir BERT_DIR, --stop-timeout STOP_TIMEOUT, --remote-dir REMOTE_DIR,
#   --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS, --env FILE, --dry-run (print, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT=8476
STOP_TIMEOUT=300
parse_args "vm hosts zone coordinator port workdir config data-dir bert-dir stop-timeout remote-dir project
  gcloud-ssh-flags" "" "$@"
require CONFIG WORKDIR
[[ -n ${VM:-} || -n ${HOSTS:-} ]] || die "missing setting VM or HOSTS: pass --vm=NAME or --hosts=H1,H2,... (or set VM / HOSTS in the env file)"
[[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, got '${PORT}'"
[[ -z ${DATA_DIR:-} ]] || require_gs DATA_DIR
select_target

base=(.venv/bin/python -m xmc_gan_jax.main --config="$CONFIG" --workdir="$WORKDIR")
tail_args=(--expect_platform=gpu)
if [[ -n ${DATA_DIR:-} ]]; then tail_args+=(--config.dataset.data_dir="$DATA_DIR"); fi
if [[ -n ${BERT_DIR:-} ]]; then tail_args+=(--config.text_encoder.path="$BERT_DIR"); fi
tail_args+=("${EXTRA_ARGS[@]}")

if [[ $TARGET == vm ]]; then
  remote 0 "$(remote_launch train "${base[@]}" "${tail_args[@]}")"
  exit 0
fi
IFS=, read -r -a hosts <<<"$HOSTS"
n=${#hosts[@]}
((n > 0)) || die "--hosts is empty"
if ((n == 1)); then
  remote "${hosts[0]}" "$(remote_launch train "${base[@]}" "${tail_args[@]}")"
  exit 0
fi
require_gs WORKDIR
coordinator=${COORDINATOR:-${hosts[0]#*@}}
for ((i = 0; i < n; i++)); do
  remote "${hosts[i]}" "$(remote_launch train "${base[@]}" --multihost --coordinator_address="${coordinator}:${PORT}" \
    --num_processes="$n" --process_id="$i" "${tail_args[@]}")"
done
((DRY_RUN)) || note "started ${n} processes (coordinator ${coordinator}:${PORT}); logs: launch/logs.sh --hosts=${HOSTS}"
