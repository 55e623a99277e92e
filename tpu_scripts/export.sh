#!/usr/bin/env bash
# Export the trained model from MODEL_DIR on the TPU VM (worker 0):
# effnet-train --mode=export --export_dir=$EXPORT_DIR (default $MODEL_DIR/export), in the
# foreground, appending to ~/$REMOTE_DIR/logs/export.log. Export runs on the VM's CPU (no --tpu);
# stop training first (train.sh --stop) if it still holds the TPU.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--dry-run] [-- EXTRA_EFFNET_TRAIN_FLAGS...]

Run on worker 0 of \$TPU_NAME, logging to ~/\$REMOTE_DIR/logs/export.log:
  effnet-train --mode=export --config=\$CONFIG [--model=\$MODEL] --model_dir=\$MODEL_DIR
               --export_dir=\$EXPORT_DIR [EXTRA...]
EXPORT_DIR defaults to \$MODEL_DIR/export. Copy it down with:
  gcloud storage cp -r \$EXPORT_DIR .
"
  common_help
}

parse_common_flags "$@"
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  unknown_flag "$flag"
done
resolve_settings
resolve_gcs_dirs --no-data
check_config_files
driver_args export
tpu_ssh 0 "$(remote_driver_command --session=export --log=logs/export.log --foreground -- \
  "${DRIVER_ARGS[@]}" "--export_dir=$EXPORT_DIR" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})"
if [[ "$DRY_RUN" == 0 ]]; then note "exported to $EXPORT_DIR"; fi
