#!/usr/bin/env bash
# Creates one multi-GPU Compute Engine VM (default: a3-highgpu-8g, 8x H100 80 GB) from a Deep Learning VM image
# with the NVIDIA driver. Then: launch/setup_workers.sh --vm=NAME, launch/gpu_train.sh --vm=NAME.
# Delete it with: gcloud compute instances delete NAME --zone=ZONE
#
#   launch/gpu_create.sh --vm=xmc-gpu --zone=us-central1-a [--spot]
#
# Settings (flag or env file variable; see launch/env.example):
#   --vm VM, --zone ZONE              (required)
#   --machine-type MACHINE_TYPE       (default a3-highgpu-8g)
#   --gpu-type GPU_TYPE               (default nvidia-h100-80gb)
#   --gpu-count GPU_COUNT             (default 8)
#   --image-family IMAGE_FAMILY       (default common-cu128-ubuntu-2204-nvidia-570; list them with
#                                     gcloud compute images list --project=deeplearning-platform-release)
#   --image-project IMAGE_PROJECT     (default deeplearning-platform-release)
#   --boot-disk-size BOOT_DISK_SIZE   (default 500GB)
#   --spot (SPOT=1)                   Spot VM (preemptible; stopped on preemption)
#   --project PROJECT, --env FILE, --dry-run (print the gcloud command, run nothing), --help
# Arguments after -- go to `gcloud compute instances create`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MACHINE_TYPE=a3-highgpu-8g
GPU_TYPE=nvidia-h100-80gb
GPU_COUNT=8
IMAGE_FAMILY=common-cu128-ubuntu-2204-nvidia-570
IMAGE_PROJECT=deeplearning-platform-release
BOOT_DISK_SIZE=500GB
parse_args "vm zone machine-type gpu-type gpu-count image-family image-project boot-disk-size project" "spot" "$@"
require VM ZONE MACHINE_TYPE GPU_TYPE GPU_COUNT IMAGE_FAMILY IMAGE_PROJECT
[[ $GPU_COUNT =~ ^[0-9]+$ ]] || die "--gpu-count must be a number, got '${GPU_COUNT}'"
mapfile -t project < <(gcloud_project_flags)
capacity=()
if [[ ${SPOT:-0} == 1 ]]; then capacity=(--provisioning-model=SPOT --instance-termination-action=STOP); fi

run gcloud compute instances create "$VM" --zone="$ZONE" "${project[@]}" --machine-type="$MACHINE_TYPE" \
  --accelerator="type=${GPU_TYPE},count=${GPU_COUNT}" --maintenance-policy=TERMINATE \
  --image-family="$IMAGE_FAMILY" --image-project="$IMAGE_PROJECT" --boot-disk-size="$BOOT_DISK_SIZE" \
  --metadata=install-nvidia-driver=True --scopes=cloud-platform "${capacity[@]}" "${EXTRA_ARGS[@]}"
