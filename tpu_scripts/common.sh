# shellcheck shell=bash
# Shared by every tpu_scripts/*.sh that drives gcloud: the settings below, their validation, the
# dry-run aware `run` helper and the --dry-run/--help flag parsing. Sourced, never executed.
# Kept to bash 3.2 features (macOS's /bin/bash): no associative arrays, no ${x,,}, no namerefs.

# ---------------------------------------------------------------------------------------------
# Settings: every one can be overridden from the environment, e.g.
#   BUCKET=my-bucket ACCELERATOR_TYPE=v5e-8 ./tpu_scripts/create_tpu.sh --dry-run
# ---------------------------------------------------------------------------------------------
PROJECT="${PROJECT:-}"                      # empty: gcloud's configured project (core/project)
ZONE="${ZONE:-}"                            # empty: us-central2-b for v4, us-west4-a for v5e
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"  # v4-8 | v5e-8 (= v5litepod-8) | v5e-4 | v5e-1
RUNTIME_VERSION="${RUNTIME_VERSION:-}"      # empty: tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e)
BUCKET="${BUCKET:-}"                        # GCS bucket name (no gs://); needed for the default dirs
TPU_NAME="${TPU_NAME:-effnet-tpu}"
QUEUED_RESOURCE="${QUEUED_RESOURCE:-}"      # empty: ${TPU_NAME}-qr (for --spot / --queued)
# MODEL picks the default CONFIG (configs/imagenet_<model with _>_tpu.yaml) and is passed as
# --model unless only CONFIG was set (then the config names the model: no silent override).
MODEL_FROM_ENV="${MODEL:+1}"
CONFIG_FROM_ENV="${CONFIG:+1}"
MODEL="${MODEL:-efficientnetv2-s}"
CONFIG="${CONFIG:-}"                        # empty: configs/imagenet_<MODEL>_tpu.yaml (see below)
# DATA_DIR unset -> gs://$BUCKET/imagenet; set but empty -> no --data_dir (the config's source).
DATA_DIR_FROM_ENV="${DATA_DIR+1}"
DATA_DIR="${DATA_DIR-}"
MODEL_DIR="${MODEL_DIR:-}"                  # empty: gs://$BUCKET/runs/$TPU_NAME
EXPORT_DIR="${EXPORT_DIR:-}"                # empty: $MODEL_DIR/export
PARAMS_OVERRIDE="${PARAMS_OVERRIDE:-}"      # passed as --params_override when set
REMOTE_DIR="${REMOTE_DIR:-effnet_tf}"       # on the VM, relative to the login user's home
SOURCE="${SOURCE:-sdist}"                   # setup_tpu.sh: sdist (this checkout) | git (REPO_URL)
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-main}"
TF_VERSION="${TF_VERSION:-2.20.0}"          # tensorflow-tpu release installed on the VM
PYTHON="${PYTHON:-python3}"                 # local python for building the sdist
POLL_SECONDS="${POLL_SECONDS:-30}"          # queued-resource polling interval
DRY_RUN="${DRY_RUN:-0}"

# ---------------------------------------------------------------------------------------------
SCRIPT_NAME="${0##*/}"
# The folder of this file, without the external dirname (the tests run with a bare PATH).
_common_path="${BASH_SOURCE[0]}"
if [[ "$_common_path" == */* ]]; then _common_dir="${_common_path%/*}"; else _common_dir=.; fi
TPU_SCRIPTS_DIR="$(cd "$_common_dir" && pwd)"
REPO_ROOT="$(cd "$TPU_SCRIPTS_DIR/.." && pwd)"
# Dry-run lines go to fd 3 (the script's stdout) so that commands run inside $( ) still print.
exec 3>&1
EXTRA_ARGS=()    # everything after `--`: passed on to effnet-train
SCRIPT_FLAGS=()  # flags left for the script itself after parse_common_flags

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

note() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# Shell-quote one argument: plain words stay readable, anything else is single-quoted, so
# every printed line can be pasted back into a shell (or parsed by shlex) unchanged.
quote_arg() {
  local s=$1 sq="'"
  if [[ -n "$s" && "$s" =~ ^[-A-Za-z0-9_./:=,@%+]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//$sq/$sq\\$sq$sq}"
  fi
}

quote_cmd() {
  local out="" a
  for a in "$@"; do
    out="$out $(quote_arg "$a")"
  done
  printf '%s' "${out# }"
}

# Print the command; run it unless DRY_RUN=1. Real runs echo it to stderr with a "+ " prefix.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(quote_cmd "$@")" >&3
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# Like run, for read-only look-ups whose output the caller captures. In a dry run the command is
# printed and the output is empty (the caller treats that as "not found").
query() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(quote_cmd "$@")" >&3
    return 0
  fi
  "$@" 2>/dev/null || true
}

# Parse the flags every script shares; the others land in SCRIPT_FLAGS, `-- ARGS` in EXTRA_ARGS.
# The script defines usage() before calling this.
parse_common_flags() {
  SCRIPT_FLAGS=()
  EXTRA_ARGS=()
  while (($#)); do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        EXTRA_ARGS=("$@")
        break
        ;;
      *) SCRIPT_FLAGS+=("$1") ;;
    esac
    shift
  done
  case "$DRY_RUN" in
    0 | 1) export DRY_RUN ;;
    *) die "DRY_RUN=$DRY_RUN is not allowed: use 0 or 1" ;;
  esac
}

unknown_flag() {
  die "unknown option '$1' (see $SCRIPT_NAME --help)"
}

no_extra_args() {
  if ((${#EXTRA_ARGS[@]})); then
    die "$SCRIPT_NAME takes no arguments after '--' (got: $(quote_cmd "${EXTRA_ARGS[@]}"))"
  fi
}

# Text shared by every usage().
common_help() {
  printf '%s\n' "Common options:
  --dry-run   print every gcloud command instead of running it (nothing is changed)
  -h, --help  this help
Settings come from environment variables (defaults in tpu_scripts/common.sh): PROJECT, ZONE,
ACCELERATOR_TYPE (v4-8, v5e-8 = v5litepod-8, v5e-4, v5e-1), RUNTIME_VERSION, TPU_NAME, BUCKET,
MODEL, CONFIG, DATA_DIR, MODEL_DIR, EXPORT_DIR, PARAMS_OVERRIDE, QUEUED_RESOURCE, REMOTE_DIR."
}

# ---------------------------------------------------------------------------------------------
# Validation and derived defaults. Call resolve_settings after parse_common_flags.
# ---------------------------------------------------------------------------------------------
valid_resource_name() {  # GCP resource ids: lowercase letter first, then [-a-z0-9], <= 63
  [[ "$1" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]]
}

resolve_accelerator() {
  local requested=$ACCELERATOR_TYPE
  case "$requested" in
    v5e-1 | v5e-4 | v5e-8) ACCELERATOR_TYPE="v5litepod-${requested#v5e-}" ;;
  esac
  case "$ACCELERATOR_TYPE" in
    v4-8)
      RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
      ZONE="${ZONE:-us-central2-b}"
      ;;
    v5litepod-1 | v5litepod-4 | v5litepod-8)
      RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}"
      ZONE="${ZONE:-us-west4-a}"
      ;;
    v4-* | v5e-* | v5litepod-*)
      die "ACCELERATOR_TYPE=$requested is a multi-host slice; these scripts drive one TPU host" \
        "(effnet-train --tpu=local): use v4-8, v5e-8 (= v5litepod-8), v5e-4 or v5e-1" \
        "(pod slices: see 'Pod slices' in docs/tpu.md)"
      ;;
    *)
      die "unknown ACCELERATOR_TYPE='$requested'; allowed: v4-8, v5e-8 (= v5litepod-8)," \
        "v5e-4 (= v5litepod-4), v5e-1 (= v5litepod-1)"
      ;;
  esac
}

resolve_settings() {
  resolve_accelerator
  valid_resource_name "$TPU_NAME" ||
    die "TPU_NAME='$TPU_NAME' is not a valid TPU name: lowercase letters, digits and '-'," \
      "starting with a letter, at most 63 characters"
  QUEUED_RESOURCE="${QUEUED_RESOURCE:-${TPU_NAME}-qr}"
  valid_resource_name "$QUEUED_RESOURCE" ||
    die "QUEUED_RESOURCE='$QUEUED_RESOURCE' is not a valid name: lowercase letters, digits and '-'"
  [[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    die "ZONE='$ZONE' does not look like a zone (e.g. us-central2-b)"
  if [[ -n "$PROJECT" && ! "$PROJECT" =~ ^[a-z][-a-z0-9.:]*[a-z0-9]$ ]]; then
    die "PROJECT='$PROJECT' is not a valid project id (e.g. my-project-123)"
  fi
  [[ "$REMOTE_DIR" =~ ^[-A-Za-z0-9_./]+$ && "$REMOTE_DIR" != *..* ]] ||
    die "REMOTE_DIR='$REMOTE_DIR' must be a plain path, relative to the VM user's home" \
      "(letters, digits, - _ . /; no ~ or ..)"
  # Accept "gs://name" and "name/" for BUCKET: people paste either.
  BUCKET="${BUCKET#gs://}"
  BUCKET="${BUCKET%/}"
  if [[ -n "$BUCKET" && ! "$BUCKET" =~ ^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$ ]]; then
    die "BUCKET='$BUCKET' is not a valid GCS bucket name (lowercase letters, digits, - _ .)"
  fi
  if [[ -z "$CONFIG" ]]; then
    # configs/imagenet_<model>_tpu.yaml, or configs/imagenet_<model>.yaml when only that exists.
    local stem=$MODEL
    stem="${stem//-/_}"
    CONFIG="configs/imagenet_${stem}_tpu.yaml"
    if [[ ! -f "$REPO_ROOT/$CONFIG" && -f "$REPO_ROOT/configs/imagenet_${stem}.yaml" ]]; then
      CONFIG="configs/imagenet_${stem}.yaml"
    fi
  fi
  [[ "$POLL_SECONDS" =~ ^[0-9]+$ ]] || die "POLL_SECONDS='$POLL_SECONDS' is not a number of seconds"
  if [[ "$DRY_RUN" == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found on PATH: install the Google Cloud SDK" \
      "(https://cloud.google.com/sdk/docs/install), or use --dry-run to see the commands"
  fi
}

# The gs:// directories. `resolve_gcs_dirs [--no-data]`; --no-data when DATA_DIR is not used
# (export, TensorBoard). Fails clearly when BUCKET is needed but missing.
resolve_gcs_dirs() {
  local need_data=1
  if [[ "${1:-}" == --no-data ]]; then need_data=0; fi
  if [[ -z "$MODEL_DIR" || ( "$need_data" == 1 && -z "$DATA_DIR_FROM_ENV" ) ]] &&
    [[ -z "$BUCKET" ]]; then
    die "BUCKET is not set: export BUCKET=my-bucket (a GCS bucket the TPU VM can write to)," \
      "or set both MODEL_DIR and DATA_DIR to gs:// paths"
  fi
  MODEL_DIR="${MODEL_DIR:-gs://$BUCKET/runs/$TPU_NAME}"
  if [[ -z "$DATA_DIR_FROM_ENV" && -n "$BUCKET" ]]; then
    DATA_DIR="gs://$BUCKET/imagenet"
  fi
  MODEL_DIR="${MODEL_DIR%/}"
  EXPORT_DIR="${EXPORT_DIR:-$MODEL_DIR/export}"
  # A TPU VM's local disk is lost with the VM (preemption), and TPU hosts read data fastest from
  # GCS in the same region: both directories must be gs:// paths.
  local name value
  for name in MODEL_DIR EXPORT_DIR DATA_DIR; do
    value="${!name}"
    [[ "$name" == DATA_DIR && -z "$value" ]] && continue
    [[ "$value" =~ ^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$ ]] ||
      die "$name='$value' must be a gs:// path (e.g. gs://my-bucket/...): the TPU VM is" \
        "deleted or preempted with its disk, so runs and data live in GCS"
  done
}

# Warn (not fail: the VM may have a different checkout) when a config is not in this checkout,
# since setup_tpu.sh --source=sdist copies configs/ from here.
check_config_files() {
  local cfg rest=$CONFIG
  while [[ -n "$rest" ]]; do
    cfg="${rest%%,*}"
    if [[ "$rest" == *,* ]]; then rest="${rest#*,}"; else rest=""; fi
    if [[ "$cfg" != /* && "$cfg" != gs://* && ! -f "$REPO_ROOT/$cfg" ]]; then
      note "warning: config '$cfg' is not in this checkout ($REPO_ROOT); it must exist on the VM" \
        "under ~/$REMOTE_DIR"
    fi
  done
}

# gcloud flags every TPU command takes.
gcloud_location_flags() {
  GCLOUD_FLAGS=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then GCLOUD_FLAGS+=("--project=$PROJECT"); fi
}

tpu_vm() {  # tpu_vm VERB ARGS...: gcloud compute tpus tpu-vm VERB ARGS... --zone --project
  gcloud_location_flags
  run gcloud compute tpus tpu-vm "$@" "${GCLOUD_FLAGS[@]}"
}

queued() {  # queued VERB ARGS...: gcloud compute tpus queued-resources VERB ...
  gcloud_location_flags
  run gcloud compute tpus queued-resources "$@" "${GCLOUD_FLAGS[@]}"
}

# Remote command on the VM: `tpu_ssh WORKER REMOTE_COMMAND [extra gcloud flags]`.
tpu_ssh() {
  local worker=$1 command=$2
  shift 2
  tpu_vm ssh "$TPU_NAME" "--worker=$worker" "$@" "--command=$command"
}

vm_state() {  # prints the TPU VM's state (READY, PREEMPTED, ...) or nothing when it is absent
  gcloud_location_flags
  query gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" "--format=value(state)"
}

queued_state() {  # prints the queued resource's state (ACTIVE, SUSPENDED, ...) or nothing
  gcloud_location_flags
  query gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${GCLOUD_FLAGS[@]}" \
    "--format=value(state.state)"
}

# Wait until the queued resource is ACTIVE (its TPU VM exists). Fails on FAILED/SUSPENDED.
wait_for_queued_resource() {
  local state
  while :; do
    state="$(queued_state)"
    if [[ "$DRY_RUN" == 1 ]]; then
      printf '# (dry run: then poll every %ss until the state is ACTIVE)\n' "$POLL_SECONDS" >&3
      return 0
    fi
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED | SUSPENDING | DELETING)
        die "queued resource $QUEUED_RESOURCE is $state; see: gcloud compute tpus" \
          "queued-resources describe $QUEUED_RESOURCE --zone=$ZONE"
        ;;
      "") die "queued resource $QUEUED_RESOURCE not found in $ZONE" ;;
    esac
    note "queued resource $QUEUED_RESOURCE is $state; waiting ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
  done
}

# Arguments for effnet-train shared by train.sh, eval.sh and export.sh: `driver_args MODE`.
driver_args() {
  DRIVER_ARGS=("--mode=$1" "--config=$CONFIG")
  if [[ -n "$MODEL_FROM_ENV" || -z "$CONFIG_FROM_ENV" ]]; then
    DRIVER_ARGS+=("--model=$MODEL")
  fi
  DRIVER_ARGS+=("--model_dir=$MODEL_DIR")
  if [[ -n "$DATA_DIR" ]]; then DRIVER_ARGS+=("--data_dir=$DATA_DIR"); fi
  if [[ -n "$PARAMS_OVERRIDE" ]]; then DRIVER_ARGS+=("--params_override=$PARAMS_OVERRIDE"); fi
}

# The remote command that starts effnet-train through vm_run.sh in ~/$REMOTE_DIR on the VM.
# `remote_driver_command VM_RUN_FLAGS... -- DRIVER_ARGS...`
remote_driver_command() {
  local run_flags=()
  while (($#)) && [[ "$1" != -- ]]; do
    run_flags+=("$1")
    shift
  done
  shift
  printf 'cd %s && %s' "$(quote_arg "$REMOTE_DIR")" \
    "$(quote_cmd bash tpu_scripts/vm_run.sh ${run_flags[@]+"${run_flags[@]}"} -- effnet-train "$@")"
}
