#!/usr/bin/env bash
# Follow a run on the TPU VM: tail -F its log on worker 0 (Ctrl-C stops following, not the run),
# or, with --tensorboard, run TensorBoard on the VM against MODEL_DIR behind an ssh port forward.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

TB_PORT="${TB_PORT:-6006}"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--log=train|eval|export] [--lines=N] [--dry-run]
       $SCRIPT_NAME --tensorboard [--dry-run]

  (default)      tail -F ~/\$REMOTE_DIR/logs/train.log on worker 0 of \$TPU_NAME
  --log=NAME     follow logs/NAME.log instead (eval, export)
  --lines=N      start with the last N lines (default 100)
  --tensorboard  run TensorBoard on the VM on \$MODEL_DIR, forwarded to
                 http://localhost:\$TB_PORT (TB_PORT, default 6006); Ctrl-C stops it
"
  common_help
}

parse_common_flags "$@"
LOG_NAME=train
LINES_SHOWN=100
TENSORBOARD=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --log=*) LOG_NAME="${flag#*=}" ;;
    --lines=*) LINES_SHOWN="${flag#*=}" ;;
    --tensorboard) TENSORBOARD=1 ;;
    *) unknown_flag "$flag" ;;
  esac
done
no_extra_args
resolve_settings
[[ "$LOG_NAME" =~ ^[a-z_]+$ ]] || die "--log='$LOG_NAME' is not allowed: use train, eval or export"
[[ "$LINES_SHOWN" =~ ^[0-9]+$ ]] || die "--lines='$LINES_SHOWN' is not a number of lines"
[[ "$TB_PORT" =~ ^[0-9]+$ && "$TB_PORT" -ge 1 && "$TB_PORT" -le 65535 ]] ||
  die "TB_PORT='$TB_PORT' is not a port number (1-65535)"

if [[ "$TENSORBOARD" == 1 ]]; then
  resolve_gcs_dirs --no-data
  note "TensorBoard on $MODEL_DIR: open http://localhost:$TB_PORT (Ctrl-C to stop)"
  tpu_ssh 0 "export PATH=\"\$HOME/.local/bin:\$PATH\" && $(quote_cmd tensorboard \
    "--logdir=$MODEL_DIR" --host=localhost "--port=$TB_PORT")" \
    "--ssh-flag=-L $TB_PORT:localhost:$TB_PORT"
else
  tpu_ssh 0 "$(quote_cmd tail -n "$LINES_SHOWN" -F "$REMOTE_DIR/logs/$LOG_NAME.log")"
fi
