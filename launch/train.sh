#!/usr/bin/env bash
# Starts training on every worker of a TPU VM, detached, one log per worker (~/xmc_logs/train.log). It first stops
# a training run already there (SIGTERM: it saves a checkpoint, then exits). Re-running the same command resumes:
# the trainer restores the latest checkpoint in the workdir.
#
#   launch/train.sh --tpu-name=xmc --zone=us-central2-b --workdir=gs://BUCKET/coco128 [-- --config.total_steps=1000]
#
# Runs on each worker:
#   python -m xmc_gan_jax.main --config=CONFIG --workdir=WORKDIR --multihost --expect_platform=tpu \
#     [--config.dataset.data_dir=DATA_DIR] [--config.text_encoder.path=BERT_DIR] [ARGS after --]
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name TPU_NAME, --zone ZONE  (required)
#   --workdir WORKDIR                 gs://BUCKET/RUN: checkpoints, TensorBoard events, samples (required)
#   --config CONFIG                   (default configs/coco.py:res=128; 256 px on a v4-32: configs/coco.py:res=256,pod=v4-32)
#   --data-dir DATA_DIR               gs:// TFDS data dir (default: TFDS_DATA_DIR written by setup_workers.sh)
#   --bert-dir BERT_DIR               BERT folder relative to the checkout (default bert-base-uncased; "" = the config's)
#   --stop-timeout STOP_TIMEOUT       seconds the previous run gets to save and exit before SIGKILL (default 300)
#   --remote-dir REMOTE_DIR, --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS
#   --env FILE, --dry-run (print the gcloud command, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STOP_TIMEOUT=300
parse_args "tpu-name zone workdir config data-dir bert-dir stop-timeout remote-dir project gcloud-ssh-flags" "" "$@"
require TPU_NAME ZONE CONFIG
require_gs WORKDIR
[[ -z ${DATA_DIR:-} ]] || require_gs DATA_DIR
TARGET=tpu

cmd=(.venv/bin/python -m xmc_gan_jax.main --config="$CONFIG" --workdir="$WORKDIR" --multihost --expect_platform=tpu)
if [[ -n ${DATA_DIR:-} ]]; then cmd+=(--config.dataset.data_dir="$DATA_DIR"); fi
if [[ -n ${BERT_DIR:-} ]]; then cmd+=(--config.text_encoder.path="$BERT_DIR"); fi
cmd+=("${EXTRA_ARGS[@]}")

remote all "$(remote_launch train "${cmd[@]}")"
((DRY_RUN)) || note "started on all workers of ${TPU_NAME}; follow with: launch/logs.sh --tpu-name=${TPU_NAME} --follow"
