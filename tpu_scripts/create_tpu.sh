#!/usr/bin/env bash
# Create the Cloud TPU VM: on demand (`gcloud compute tpus tpu-vm create`), or as a queued
# resource (--queued), optionally spot (--spot: cheaper, may be preempted; see resume.sh).
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--spot] [--queued] [--wait] [--dry-run]

Create the TPU VM \$TPU_NAME ($ACCELERATOR_TYPE by default) in \$ZONE.
  (default)  gcloud compute tpus tpu-vm create: on demand, returns when the VM is READY
  --queued   gcloud compute tpus queued-resources create: waits in a queue for capacity
  --spot     a queued resource with --spot: much cheaper, but Google may preempt it at any
             time; the training driver checkpoints to MODEL_DIR and resume.sh restarts it
  --wait     with --queued/--spot: poll until the queued resource is ACTIVE (the VM exists)
"
  common_help
}

parse_common_flags "$@"
SPOT=0
QUEUED=0
WAIT=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --spot) SPOT=1 QUEUED=1 ;;
    --queued) QUEUED=1 ;;
    --wait) WAIT=1 ;;
    *) unknown_flag "$flag" ;;
  esac
done
no_extra_args
resolve_settings

if [[ "$QUEUED" == 1 ]]; then
  spot_flag=()
  if [[ "$SPOT" == 1 ]]; then spot_flag=(--spot); fi
  queued create "$QUEUED_RESOURCE" "--node-id=$TPU_NAME" "--accelerator-type=$ACCELERATOR_TYPE" \
    "--runtime-version=$RUNTIME_VERSION" ${spot_flag[@]+"${spot_flag[@]}"}
  if [[ "$WAIT" == 1 ]]; then
    wait_for_queued_resource
    if [[ "$DRY_RUN" == 0 ]]; then note "TPU VM $TPU_NAME is ready"; fi
    note "next: tpu_scripts/setup_tpu.sh"
  else
    note "queued resource $QUEUED_RESOURCE requested; the VM $TPU_NAME exists once its state is" \
      "ACTIVE: gcloud compute tpus queued-resources describe $QUEUED_RESOURCE --zone=$ZONE"
  fi
else
  if [[ "$WAIT" == 1 ]]; then note "--wait only matters with --queued/--spot"; fi
  tpu_vm create "$TPU_NAME" "--accelerator-type=$ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION"
  note "next: tpu_scripts/setup_tpu.sh"
fi
