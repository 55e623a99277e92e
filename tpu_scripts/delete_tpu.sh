#!/usr/bin/env bash
# Delete the TPU VM (or its queued resource, which deletes the VM with it). Asks first unless
# --yes; a dry run never asks. Nothing in the bucket (checkpoints, exports) is touched.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--yes] [--queued] [--dry-run]

Delete \$TPU_NAME in \$ZONE. When the queued resource \$QUEUED_RESOURCE exists (or with
--queued/--spot) that is deleted with --force, which deletes its VM too. The bucket is kept.
  --yes     do not ask for confirmation
  --queued  delete the queued resource without looking it up first (--spot: the same)
"
  common_help
}

parse_common_flags "$@"
YES=0
QUEUED=0
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --yes | -y) YES=1 ;;
    --queued | --spot) QUEUED=1 ;;
    *) unknown_flag "$flag" ;;
  esac
done
no_extra_args
resolve_settings

if [[ "$QUEUED" == 0 && -n "$(queued_state)" ]]; then QUEUED=1; fi
if [[ "$QUEUED" == 1 ]]; then
  what="queued resource $QUEUED_RESOURCE and its TPU VM $TPU_NAME"
else
  what="TPU VM $TPU_NAME"
fi

if [[ "$DRY_RUN" == 0 && "$YES" == 0 ]]; then
  printf 'Delete %s in %s%s? [y/N] ' "$what" "$ZONE" "${PROJECT:+ (project $PROJECT)}" >&2
  answer=""
  read -r answer || die "no answer on standard input; pass --yes to delete without asking"
  case "$answer" in
    y | Y | yes | YES | Yes) ;;
    *)
      note "not deleted"
      exit 1
      ;;
  esac
fi

# --quiet: gcloud's own prompt would ask a second time.
if [[ "$QUEUED" == 1 ]]; then
  queued delete "$QUEUED_RESOURCE" --force --quiet
else
  tpu_vm delete "$TPU_NAME" --quiet
fi
if [[ "$DRY_RUN" == 0 ]]; then note "deleted $what; the bucket's data is kept"; fi
