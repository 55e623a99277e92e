#!/usr/bin/env bash
# Runs ON the TPU VM (setup_tpu.sh puts it in ~/$REMOTE_DIR/tpu_scripts and calls it): installs
# tensorflow-tpu, then effnet_tf without its `tensorflow` requirement (tensorflow-tpu provides
# the same `tensorflow` module; installing both would overwrite one with the other), then the
# rest of effnet_tf's requirements, read from the installed package's metadata.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
TF_VERSION="${TF_VERSION:-2.20.0}"
LIBTPU_INDEX="${LIBTPU_INDEX:-https://storage.googleapis.com/libtpu-tf-releases/index.html}"
DRY_RUN="${DRY_RUN:-0}"
PACKAGE=""
NAME="${0##*/}"

usage() {
  printf '%s\n' "Usage: $NAME --package=SDIST_OR_DIR [--tf-version=$TF_VERSION] [--dry-run]

Install tensorflow-tpu==TF_VERSION and effnet_tf (an sdist file or a source folder) for the
login user (pip falls back to ~/.local when site-packages is not writable).
  --dry-run  print the commands instead of running them"
}

die() {
  printf '%s: error: %s\n' "$NAME" "$*" >&2
  exit 2
}

quote_cmd() {
  local out
  out="$(printf '%q ' "$@")"
  printf '%s' "${out% }"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

for arg in "$@"; do
  case "$arg" in
    --package=*) PACKAGE="${arg#*=}" ;;
    --tf-version=*) TF_VERSION="${arg#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown option '$arg' (see $NAME --help)" ;;
  esac
done
[[ -n "$PACKAGE" ]] || die "--package=SDIST_OR_DIR is required"
[[ "$TF_VERSION" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] ||
  die "--tf-version='$TF_VERSION' is not a version number like 2.20.0"
if [[ "$DRY_RUN" == 0 && ! -e "$PACKAGE" ]]; then
  die "--package='$PACKAGE' does not exist on this VM"
fi

# Requirements of the installed effnet_tf, minus `tensorflow` itself and the extras.
DEPS_CODE='import importlib.metadata as m, re
for r in m.requires("effnet_tf") or []:
    name = re.split(r"[^A-Za-z0-9_.-]", r, maxsplit=1)[0].lower()
    if "extra ==" not in r and name != "tensorflow":
        print(r.split(";")[0].strip())'

run "$PYTHON" -m pip install --upgrade pip
run "$PYTHON" -m pip install "tensorflow-tpu==$TF_VERSION" -f "$LIBTPU_INDEX"
# --force-reinstall: a re-run of setup_tpu.sh must replace the code even at the same version.
run "$PYTHON" -m pip install --no-deps --force-reinstall "$PACKAGE"
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%s\n' "$(quote_cmd "$PYTHON" -m pip install) <effnet_tf's requirements except tensorflow>"
else
  deps=()
  while IFS= read -r line; do
    if [[ -n "$line" ]]; then deps+=("$line"); fi
  done < <("$PYTHON" -c "$DEPS_CODE")
  if ((${#deps[@]})); then run "$PYTHON" -m pip install "${deps[@]}"; fi
  export PATH="$HOME/.local/bin:$PATH"
  # Fail here, not at train time, when the TPU stack or the entry point is broken.
  run "$PYTHON" -c 'import tensorflow as tf, effnet_tf; print("tensorflow", tf.__version__, "effnet_tf OK")'
  command -v effnet-train >/dev/null || die "effnet-train is not on PATH after the install"
fi
