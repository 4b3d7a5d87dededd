#!/usr/bin/env bash
# Starts the standalone evaluation follower (--mode=eval: scores each new checkpoint in the workdir, FID/KID with
# the standard Inception), detached, on a separate machine: worker 0 of a TPU VM of its own, a Compute Engine VM
# (--vm) or an ssh host (--hosts). Its log: ~/xmc_logs/eval.log there. Set the machine up with setup_workers.sh.
#
#   launch/eval.sh --tpu-name=xmc-eval --zone=us-central2-b --workdir=gs://BUCKET/coco128
#
# Runs: python -m xmc_gan_jax.main --config=CONFIG --workdir=WORKDIR --mode=eval [--expect_platform=PLATFORM]
#         [--config.dataset.data_dir=DATA_DIR] [--config.text_encoder.path=BERT_DIR] [ARGS after --]
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name EVAL_TPU_NAME          the eval TPU VM (never the training one: a TPU runs one process);
#   or --vm VM, or --hosts HOST       (one of them is required), --zone ZONE
#   --workdir WORKDIR                 the training run's gs:// workdir (required)
#   --config CONFIG                   the training run's config (default configs/coco.py:res=128)
#   --platform PLATFORM               tpu, gpu or cpu: refuse to start elsewhere (default: tpu with --tpu-name)
#   --data-dir DATA_DIR, --bert-dir BERT_DIR, --remote-dir REMOTE_DIR, --project PROJECT,
#   --gcloud-ssh-flags GCLOUD_SSH_FLAGS, --env FILE, --dry-run (print the command, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STOP_TIMEOUT=60
# --tpu-name here names the eval TPU (EVAL_TPU_NAME in the env file), so that one env file serves both.
args=()
for arg in "$@"; do
  case $arg in
    --tpu-name=*) args+=(--eval-tpu-name="${arg#--tpu-name=}") ;;
    --tpu-name) args+=(--eval-tpu-name) ;;
    *) args+=("$arg") ;;
  esac
done
parse_args "eval-tpu-name vm hosts zone workdir config platform data-dir bert-dir remote-dir project gcloud-ssh-flags" \
  "" "${args[@]}"
require CONFIG
require_gs WORKDIR
[[ -z ${DATA_DIR:-} ]] || require_gs DATA_DIR
TPU_NAME=${EVAL_TPU_NAME:-}
if [[ -z $TPU_NAME && -z ${VM:-} && -z ${HOSTS:-} ]]; then
  die "missing setting EVAL_TPU_NAME: pass --tpu-name=EVAL_TPU (or --vm=NAME / --hosts=HOST), or set EVAL_TPU_NAME or VM in the env file"
fi
select_target
if [[ -z ${PLATFORM:-} && $TARGET == tpu ]]; then PLATFORM=tpu; fi

cmd=(.venv/bin/python -m xmc_gan_jax.main --config="$CONFIG" --workdir="$WORKDIR" --mode=eval)
if [[ -n ${PLATFORM:-} ]]; then cmd+=(--expect_platform="$PLATFORM"); fi
if [[ -n ${DATA_DIR:-} ]]; then cmd+=(--config.dataset.data_dir="$DATA_DIR"); fi
if [[ -n ${BERT_DIR:-} ]]; then cmd+=(--config.text_encoder.path="$BERT_DIR"); fi
cmd+=("${EXTRA_ARGS[@]}")

host=0
if [[ $TARGET == hosts ]]; then host=${HOSTS%%,*}; fi
remote "$host" "$(remote_launch eval "${cmd[@]}")"
