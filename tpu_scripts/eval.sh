#!/usr/bin/env bash
# Evaluate the latest checkpoint in MODEL_DIR on the TPU VM: effnet-train --mode=eval --tpu=local,
# in the foreground (output shown here and appended to ~/$REMOTE_DIR/logs/eval.log).
# The TPU serves one process: run it after training ends, or after train.sh --stop.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--detach] [--dry-run] [-- EXTRA_EFFNET_TRAIN_FLAGS...]

Run on all workers of \$TPU_NAME, logging to ~/\$REMOTE_DIR/logs/eval.log:
  effnet-train --mode=eval --config=\$CONFIG [--model=\$MODEL] --model_dir=\$MODEL_DIR
               --data_dir=\$DATA_DIR --tpu=local [EXTRA...]
  --detach  run it in a detached tmux session 'eval' instead (follow: logs.sh --log=eval)
"
  common_help
}

parse_common_flags "$@"
DETACH=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --detach) DETACH=1 ;;
    *) unknown_flag "$flag" ;;
  esac
done
resolve_settings
resolve_gcs_dirs
check_config_files
driver_args eval
run_flags=(--session=eval --log=logs/eval.log)
if [[ "$DETACH" == 0 ]]; then run_flags+=(--foreground); fi
tpu_ssh all "$(remote_driver_command "${run_flags[@]}" -- "${DRIVER_ARGS[@]}" --tpu=local \
  ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})"
