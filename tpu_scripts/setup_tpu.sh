#!/usr/bin/env bash
# Install this package on every worker of the TPU VM, with tensorflow-tpu, from either
#   --source=sdist (default): an sdist built from this checkout (`python -m build --sdist`),
#                             copied with `gcloud compute tpus tpu-vm scp`, plus configs/;
#   --source=git:             a shallow fetch of $REPO_URL at $REPO_REF on the VM.
# Both leave ~/$REMOTE_DIR on the VM holding configs/ and tpu_scripts/vm_*.sh, which train.sh,
# eval.sh and export.sh use. Re-run it after changing the code: it reinstalls.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == */* ]]; then here="${BASH_SOURCE[0]%/*}"; else here=.; fi
# shellcheck source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $SCRIPT_NAME [--source=sdist|git] [--dry-run]

Install effnet_tf and tensorflow-tpu==\$TF_VERSION ($TF_VERSION) on all workers of \$TPU_NAME.
  --source=sdist  (default) build an sdist of this checkout locally (needs: pip install build)
                  and copy it, configs/ and tpu_scripts/vm_*.sh to ~/\$REMOTE_DIR on the VM
  --source=git    fetch \$REPO_URL at \$REPO_REF (default main) into ~/\$REMOTE_DIR on the VM
                  and install from there (the VM needs access to the repository)
Also read: SOURCE (same as --source), REPO_URL, REPO_REF, TF_VERSION, PYTHON (local python).
"
  common_help
}

parse_common_flags "$@"
for flag in ${SCRIPT_FLAGS[@]+"${SCRIPT_FLAGS[@]}"}; do
  case "$flag" in
    --source=*) SOURCE="${flag#*=}" ;;
    *) unknown_flag "$flag" ;;
  esac
done
no_extra_args
resolve_settings
[[ "$TF_VERSION" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] ||
  die "TF_VERSION='$TF_VERSION' is not a version number like 2.20.0"

remote_install() {  # remote_install PACKAGE_PATH: run from ~/$REMOTE_DIR on the VM
  quote_cmd bash tpu_scripts/vm_install.sh "--package=$1" "--tf-version=$TF_VERSION"
}

# The version in setup.py, read without running python (only names the file in a dry run).
setup_py_version() {
  local line
  while IFS= read -r line; do
    if [[ "$line" =~ version=[\"\']([^\"\']+)[\"\'] ]]; then
      printf '%s' "${BASH_REMATCH[1]}"
      return 0
    fi
  done <"$REPO_ROOT/setup.py"
  printf 'VERSION'
}

case "$SOURCE" in
  sdist)
    dist_dir="${TMPDIR:-/tmp}/effnet_tf_sdist.$$"
    if [[ "$DRY_RUN" == 0 ]]; then
      [[ -d "$REPO_ROOT/configs" ]] || die "no configs/ folder in $REPO_ROOT to copy to the VM"
      "$PYTHON" -c 'import build' 2>/dev/null ||
        die "--source=sdist needs the 'build' package for $PYTHON: $PYTHON -m pip install build" \
          "(or use --source=git with REPO_URL)"
      trap 'rm -rf "$dist_dir"' EXIT
    fi
    run "$PYTHON" -m build --sdist --outdir "$dist_dir" "$REPO_ROOT"
    if [[ "$DRY_RUN" == 1 ]]; then
      sdist="$dist_dir/effnet_tf-$(setup_py_version).tar.gz"
    else
      sdists=("$dist_dir"/effnet_tf-*.tar.gz)
      [[ ${#sdists[@]} == 1 && -f "${sdists[0]}" ]] || die "expected one sdist in $dist_dir"
      sdist="${sdists[0]}"
    fi
    tpu_ssh all "mkdir -p $(quote_cmd "$REMOTE_DIR/dist" "$REMOTE_DIR/tpu_scripts")"
    tpu_vm scp "$sdist" "$TPU_NAME:$REMOTE_DIR/dist/" --worker=all
    tpu_vm scp "$TPU_SCRIPTS_DIR/vm_install.sh" "$TPU_SCRIPTS_DIR/vm_run.sh" \
      "$TPU_NAME:$REMOTE_DIR/tpu_scripts/" --worker=all
    tpu_vm scp "$REPO_ROOT/configs" "$TPU_NAME:$REMOTE_DIR/" --recurse --worker=all
    tpu_ssh all "cd $(quote_arg "$REMOTE_DIR") && $(remote_install "dist/${sdist##*/}")"
    ;;
  git)
    [[ -n "$REPO_URL" ]] ||
      die "--source=git needs REPO_URL (e.g. REPO_URL=https://github.com/you/effnet_tf.git)"
    [[ "$REPO_REF" =~ ^[-A-Za-z0-9_./]+$ ]] || die "REPO_REF='$REPO_REF' is not a branch, tag or commit"
    # init + fetch of one ref works for a first install and for an update, for branches and tags.
    fetch="mkdir -p $(quote_arg "$REMOTE_DIR") && cd $(quote_arg "$REMOTE_DIR")"
    fetch="$fetch && { test -d .git || git init -q; }"
    fetch="$fetch && $(quote_cmd git fetch -q --depth=1 "$REPO_URL" "$REPO_REF")"
    fetch="$fetch && git checkout -q --force FETCH_HEAD"
    tpu_ssh all "$fetch && $(remote_install .)"
    ;;
  *) die "SOURCE/--source='$SOURCE' is not allowed: use sdist or git" ;;
esac
note "next: BUCKET=... tpu_scripts/train.sh"
