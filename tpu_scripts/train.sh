#!/usr/bin/env bash
# Start ImageNet training on the TPU VM: effnet-train --mode=train_and_eval --tpu=local with
# gs:// data and model dirs, in a detached tmux session on every worker (vm_run.sh), appending
# to ~/$REMOTE_DIR/logs/train.log. Checkpoints go to MODEL_DIR, so a restart (resume.sh, or this
# script again) continues from the last one.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--if-idle] [--dry-run] [-- EXTRA_EFFNET_TRAIN_FLAGS...]
       $SCRIPT_NAME --status | --stop [--dry-run]

Run on all workers of \$TPU_NAME, detached (tmux), logging to ~/\$REMOTE_DIR/logs/train.log:
  effnet-train --mode=train_and_eval --config=\$CONFIG [--model=\$MODEL] --model_dir=\$MODEL_DIR
               --data_dir=\$DATA_DIR [--params_override=\$PARAMS_OVERRIDE] --tpu=local [EXTRA...]
Defaults: CONFIG=configs/imagenet_<MODEL>_tpu.yaml (MODEL=efficientnetv2-s),
MODEL_DIR=gs://\$BUCKET/runs/\$TPU_NAME, DATA_DIR=gs://\$BUCKET/imagenet.
  --if-idle  do nothing if a training session is already running (used by resume.sh)
  --status   say whether the training session is running
  --stop     stop it (a later train.sh/resume.sh resumes from the last checkpoint)
Follow the run with tpu_scripts/logs.sh (add --tensorboard for TensorBoard).
"
  common_help
}

parse_common_flags "$@"
ACTION=start
IF_IDLE=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --if-idle) IF_IDLE=1 ;;
    --status) ACTION=status ;;
    --stop) ACTION=stop ;;
    *) unknown_flag "$flag" ;;
  esac
done
resolve_settings

if [[ "$ACTION" != start ]]; then
  no_extra_args
  worker=all
  if [[ "$ACTION" == status ]]; then worker=0; fi
  tpu_ssh "$worker" "cd $(quote_arg "$REMOTE_DIR") && $(quote_cmd bash tpu_scripts/vm_run.sh \
    --session=train "--$ACTION")"
  exit 0
fi

resolve_gcs_dirs
check_config_files
driver_args train_and_eval
run_flags=(--session=train --log=logs/train.log)
if [[ "$IF_IDLE" == 1 ]]; then run_flags+=(--if-idle); fi
tpu_ssh all "$(remote_driver_command "${run_flags[@]}" -- "${DRIVER_ARGS[@]}" --tpu=local \
  ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})"
note "training runs detached on $TPU_NAME; checkpoints and TensorBoard events: $MODEL_DIR"
note "follow it: tpu_scripts/logs.sh   (TensorBoard: tpu_scripts/logs.sh --tensorboard)"
