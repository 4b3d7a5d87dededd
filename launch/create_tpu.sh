#!/usr/bin/env bash
# Creates a Cloud TPU VM (one host, e.g. v4-8) or pod slice (e.g. v4-32, v5litepod-16) through a queued resource,
# then waits until it is ACTIVE.
#
#   launch/create_tpu.sh --tpu-name=xmc --zone=us-central2-b --accelerator-type=v4-8 [--spot | --best-effort]
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name TPU_NAME               node name (required)
#   --zone ZONE                       (required)
#   --accelerator-type ACCELERATOR_TYPE   v4-8, v4-32, v5litepod-16, ... (required)
#   --runtime-version RUNTIME_VERSION     TPU software version, e.g. tpu-ubuntu2204-base (v4),
#                                     v2-alpha-tpuv5-lite (v5e) (required)
#   --queued-resource QUEUED_RESOURCE     queued resource name (default: TPU_NAME-qr)
#   --project PROJECT                 gcloud project (default: gcloud's)
#   --spot (SPOT=1)                   Spot capacity: cheaper, preemptible
#   --best-effort (BEST_EFFORT=1)     best-effort (preemptible) capacity
#   --timeout TIMEOUT                 seconds to wait for ACTIVE (default 3600); 0 = do not wait
#   --poll-interval POLL_INTERVAL     seconds between state checks (default 30)
#   --env FILE, --dry-run (print the gcloud commands, run nothing), --help
# Arguments after -- go to `gcloud compute tpus queued-resources create` (e.g. -- --service-account=SA).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TIMEOUT=3600
parse_args "tpu-name zone accelerator-type runtime-version queued-resource project timeout poll-interval" \
  "spot best-effort" "$@"
require TPU_NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION
QUEUED_RESOURCE=${QUEUED_RESOURCE:-${TPU_NAME}-qr}
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be a whole number of seconds, got '${TIMEOUT}'"
[[ $POLL_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || die "--poll-interval must be a number of seconds, got '${POLL_INTERVAL}'"

mapfile -t project < <(gcloud_project_flags)
capacity=()
if [[ ${SPOT:-0} == 1 && ${BEST_EFFORT:-0} == 1 ]]; then die "--spot and --best-effort exclude each other"; fi
if [[ ${SPOT:-0} == 1 ]]; then capacity=(--spot); fi
if [[ ${BEST_EFFORT:-0} == 1 ]]; then capacity=(--best-effort); fi

run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" --node-id="$TPU_NAME" --zone="$ZONE" \
  "${project[@]}" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" "${capacity[@]}" \
  "${EXTRA_ARGS[@]}"

describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" --zone="$ZONE" "${project[@]}"
  --format='value(state.state)')
if ((TIMEOUT == 0)); then
  note "not waiting (--timeout=0); check with: $(quote_args "${describe[@]}")"
  exit 0
fi
if ((DRY_RUN)); then
  echo "# then, every ${POLL_INTERVAL} s for up to ${TIMEOUT} s until the state is ACTIVE:"
  run "${describe[@]}"
  exit 0
fi

# Bounded twice: at most ceil(TIMEOUT / POLL_INTERVAL) polls, and no new poll once TIMEOUT s have passed.
max_polls=$(awk -v t="$TIMEOUT" -v p="$POLL_INTERVAL" 'BEGIN { n = (p > 0) ? int(t / p) : t; if (n * p < t) n++; print (n < 1) ? 1 : n }')
start=$SECONDS
state=""
for ((poll = 1; ; poll++)); do
  state=$("${describe[@]}" 2>/dev/null || true)
  state=${state//[[:space:]]/}
  case $state in
    ACTIVE)
      note "${QUEUED_RESOURCE} is ACTIVE: TPU VM ${TPU_NAME} (${ACCELERATOR_TYPE}) in ${ZONE} after $((SECONDS - start)) s"
      exit 0 ;;
    FAILED | SUSPENDED)
      die "queued resource ${QUEUED_RESOURCE} is ${state}; see: $(quote_args "${describe[@]:0:${#describe[@]}-1}"); delete it with launch/delete_tpu.sh" ;;
  esac
  if ((poll >= max_polls || SECONDS - start > TIMEOUT)); then
    die "gave up after ${TIMEOUT} s: queued resource ${QUEUED_RESOURCE} is still '${state:-unknown}', not ACTIVE." \
      "It stays queued; check again with: $(quote_args "${describe[@]}"), or delete it with launch/delete_tpu.sh"
  fi
  note "state '${state:-unknown}' after $((SECONDS - start)) s; waiting for ACTIVE (up to ${TIMEOUT} s)"
  sleep "$POLL_INTERVAL"
done
