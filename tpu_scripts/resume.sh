#!/usr/bin/env bash
# Restart training after a preemption. Looks at the queued resource / TPU VM and:
#   VM READY                       -> train.sh --if-idle (restarts training only if it stopped)
#   preempted, suspended or gone   -> delete what is left, create_tpu.sh again (same --spot /
#                                     --queued), setup_tpu.sh, train.sh
# effnet-train then resumes from the last checkpoint in MODEL_DIR (gs://, so it outlived the VM):
# nothing is retrained beyond the steps since that checkpoint.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--spot] [--queued] [--source=sdist|git] [--dry-run] [-- EXTRA_EFFNET_TRAIN_FLAGS...]

Bring \$TPU_NAME back after a preemption and restart training; the driver resumes from the
last checkpoint in \$MODEL_DIR. Give the same --spot/--queued as to create_tpu.sh (an existing
queued resource \$QUEUED_RESOURCE is found without them). --source goes to setup_tpu.sh.
Safe to run from cron: with the VM up and training running it changes nothing.
"
  common_help
}

parse_common_flags "$@"
create_flags=()
setup_flags=()
QUEUED=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --spot | --queued)
      QUEUED=1
      create_flags+=("$flag")
      ;;
    --source=*) setup_flags+=("$flag") ;;
    *) unknown_flag "$flag" ;;
  esac
done
resolve_settings
resolve_gcs_dirs  # fail now, not after recreating the VM, when BUCKET is missing

train_flags=()
if ((${#EXTRA_ARGS[@]})); then train_flags=(-- "${EXTRA_ARGS[@]}"); fi

restart_training() {  # restart_training [--if-idle]
  "$TPU_SCRIPTS_DIR/train.sh" "$@" ${train_flags[@]+"${train_flags[@]}"}
}

recreate() {
  note "$1: recreating $TPU_NAME"
  create_flags+=(--wait)
  if [[ "$QUEUED" == 0 ]]; then create_flags=(); fi
  "$TPU_SCRIPTS_DIR/create_tpu.sh" ${create_flags[@]+"${create_flags[@]}"}
  "$TPU_SCRIPTS_DIR/setup_tpu.sh" ${setup_flags[@]+"${setup_flags[@]}"}
  restart_training
}

if [[ "$DRY_RUN" == 1 ]]; then
  printf '# (dry run: gcloud is not called, so the look-ups below find nothing and the TPU\n' >&3
  printf '#  counts as gone: this is the full recovery path)\n' >&3
fi
qr_state="$(queued_state)"
vm_state="$(vm_state)"
if [[ -n "$qr_state" ]]; then QUEUED=1; fi
note "queued resource: ${qr_state:-none}; TPU VM: ${vm_state:-none}"
note "training resumes from the last checkpoint in $MODEL_DIR"

if [[ "$QUEUED" == 1 ]]; then
  case "$qr_state" in
    ACTIVE)
      if [[ "$vm_state" == READY ]]; then
        restart_training --if-idle
      else
        queued delete "$QUEUED_RESOURCE" --force --quiet
        recreate "queued resource ACTIVE but VM ${vm_state:-missing}"
      fi
      ;;
    CREATING | ACCEPTED | PROVISIONING | WAITING_FOR_RESOURCES)
      wait_for_queued_resource
      "$TPU_SCRIPTS_DIR/setup_tpu.sh" ${setup_flags[@]+"${setup_flags[@]}"}
      restart_training
      ;;
    SUSPENDING | SUSPENDED | FAILED)
      queued delete "$QUEUED_RESOURCE" --force --quiet
      recreate "queued resource $qr_state (preempted)"
      ;;
    "") recreate "no queued resource $QUEUED_RESOURCE" ;;
    *) die "queued resource $QUEUED_RESOURCE is $qr_state; run $SCRIPT_NAME again later" ;;
  esac
else
  case "$vm_state" in
    READY) restart_training --if-idle ;;
    PREEMPTED | TERMINATED | STOPPED)
      tpu_vm delete "$TPU_NAME" --quiet
      recreate "TPU VM $vm_state"
      ;;
    "") recreate "no TPU VM $TPU_NAME" ;;
    *) die "TPU VM $TPU_NAME is $vm_state; run $SCRIPT_NAME again later" ;;
  esac
fi
