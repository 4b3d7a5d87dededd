#!/usr/bin/env bash
# Prepares one dataset once into the gs:// TFDS data dir, on worker 0 of the TPU VM (detached; log
# ~/xmc_logs/prepare_DATASET.log there), or here with --local (this checkout's .venv, `make install`).
#   coco           tfds build coco_captions/2014 --data_dir=DATA_DIR   (downloads ~40 GB from cocodataset.org)
#   ln_coco        python -m xmc_gan_jax.data.localized_narratives --config=coco --manual_dir=MANUAL_DIR --data_dir=DATA_DIR
#   ln_openimages  python -m xmc_gan_jax.data.localized_narratives --config=open_images --manual_dir=... --data_dir=...
# (MANUAL_DIR layout: see xmc_gan_jax/data/localized_narratives.py.)
#
#   launch/prepare_data.sh --dataset=coco --tpu-name=xmc --zone=us-central2-b --data-dir=gs://BUCKET/tensorflow_datasets
#
# Settings (flag or env file variable; see launch/env.example):
#   --dataset DATASET                 coco, ln_coco or ln_openimages (required)
#   --data-dir DATA_DIR               gs:// TFDS data dir (required)
#   --manual-dir MANUAL_DIR           Localized Narratives annotations/ and images/ (required for ln_*)
#   --tpu-name TPU_NAME, --zone ZONE  where it runs (worker 0), or --vm VM, or --local (LOCAL=1)
#   --remote-dir REMOTE_DIR, --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS
#   --env FILE, --dry-run (print the command, run nothing), --help
# Arguments after -- go to the builder command.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "dataset data-dir manual-dir tpu-name vm zone remote-dir project gcloud-ssh-flags" "local" "$@"
require DATASET
require_gs DATA_DIR
case $DATASET in
  coco) cmd=(.venv/bin/tfds build coco_captions/2014 --data_dir="$DATA_DIR") ;;
  ln_coco | ln_openimages)
    require MANUAL_DIR
    ln_config=coco
    if [[ $DATASET == ln_openimages ]]; then ln_config=open_images; fi
    cmd=(.venv/bin/python -m xmc_gan_jax.data.localized_narratives --config="$ln_config" --manual_dir="$MANUAL_DIR"
      --data_dir="$DATA_DIR") ;;
  *) die "--dataset must be coco, ln_coco or ln_openimages, got '${DATASET}'" ;;
esac
cmd+=("${EXTRA_ARGS[@]}")

if [[ ${LOCAL:-0} == 1 ]]; then
  [[ -x ${REPO_ROOT}/.venv/bin/python ]] || die "no ${REPO_ROOT}/.venv here; run make install first"
  cd "$REPO_ROOT"
  run "${cmd[@]}"
  exit 0
fi
select_target
script="$(remote_prelude)
$(remote_cd_checkout)
log=\$log_dir/prepare_${DATASET}.log
setsid nohup $(quote_args "${cmd[@]}") >\"\$log\" 2>&1 </dev/null &
echo \"\$(hostname): preparing ${DATASET} into $(quote "$DATA_DIR"), pid \$!, log \$log\""
remote 0 "$script"
((DRY_RUN)) || note "follow with: launch/logs.sh --worker=0 --log=prepare_${DATASET} --follow"
