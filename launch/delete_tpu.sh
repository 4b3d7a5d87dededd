#!/usr/bin/env bash
# Deletes the queued resource and its TPU VM node (everything on the workers' disks is lost; checkpoints and
# TensorBoard events in the gs:// workdir stay).
#
#   launch/delete_tpu.sh --tpu-name=xmc --zone=us-central2-b
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name TPU_NAME               node name (required)
#   --zone ZONE                       (required)
#   --queued-resource QUEUED_RESOURCE     (default: TPU_NAME-qr, as create_tpu.sh names it)
#   --project PROJECT
#   --env FILE, --dry-run (print the gcloud command, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "tpu-name zone queued-resource project" "" "$@"
require TPU_NAME ZONE
QUEUED_RESOURCE=${QUEUED_RESOURCE:-${TPU_NAME}-qr}
mapfile -t project < <(gcloud_project_flags)

# --force deletes the node together with the queued resource; --quiet skips gcloud's prompt.
run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" --zone="$ZONE" "${project[@]}" --force --quiet \
  "${EXTRA_ARGS[@]}"
