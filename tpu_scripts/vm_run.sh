#!/usr/bin/env bash
# Runs ON the TPU VM (setup_tpu.sh puts it in ~/$REMOTE_DIR/tpu_scripts): starts a command in a
# detached tmux session (nohup + setsid when tmux is missing) that appends to a log file, so a
# long training run survives the ssh session; also reports on and stops that session.
set -euo pipefail

NAME="${0##*/}"
DRY_RUN="${DRY_RUN:-0}"
RUN_DIR="${EFFNET_RUN_DIR:-$HOME/.effnet_tf_run}"  # launcher scripts and pid files
SESSION=""
LOG=""
ACTION=start
IF_IDLE=0
FOREGROUND=0

usage() {
  printf '%s\n' "Usage: $NAME --session=NAME --log=FILE [--if-idle] [--foreground] [--dry-run] -- CMD [ARG...]
       $NAME --session=NAME --status | --stop

Start CMD detached in tmux session NAME (or under nohup when tmux is missing), appending its
output to FILE. ~/.local/bin (where pip puts effnet-train) is added to PATH.
  --if-idle     if NAME is already running, leave it alone and exit 0 (else: error, exit 3);
                if it is not running, restart it only if its last run was stopped (effnet-train
                exit 75 = preempted, or killed), not if it finished (0: exit 0) or failed on
                its input or a non-finite loss (2, 3: exit 4, a person has to look)
  --foreground  run CMD in this shell instead, showing its output and appending it to FILE
  --status      say whether NAME is running; exit 0 if it is, 1 if not
  --stop        stop NAME (the training driver resumes from its last checkpoint next time)
  --dry-run     print what would run"
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

CMD=()
while (($#)); do
  case "$1" in
    --session=*) SESSION="${1#*=}" ;;
    --log=*) LOG="${1#*=}" ;;
    --if-idle) IF_IDLE=1 ;;
    --foreground) FOREGROUND=1 ;;
    --status) ACTION=status ;;
    --stop) ACTION=stop ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      CMD=("$@")
      break
      ;;
    *) die "unknown option '$1' (see $NAME --help)" ;;
  esac
  shift
done
[[ "$SESSION" =~ ^[A-Za-z0-9_-]+$ ]] ||
  die "--session='$SESSION' is required: letters, digits, '-' and '_' only"

export PATH="$HOME/.local/bin:$PATH"
PID_FILE="$RUN_DIR/$SESSION.pid"
LAUNCHER="$RUN_DIR/$SESSION.sh"
STATUS_FILE="$RUN_DIR/$SESSION.status"  # the exit status of the session's last run
# effnet-train's exit codes (effnet_tf/main.py EXIT_*).
EXIT_BAD_INPUT=2
EXIT_NON_FINITE=3
EXIT_PREEMPTED=75

have_tmux() { command -v tmux >/dev/null 2>&1; }

is_running() {
  if have_tmux && tmux has-session -t "=$SESSION" 2>/dev/null; then return 0; fi
  [[ -f "$PID_FILE" ]] && kill -0 "$(<"$PID_FILE")" 2>/dev/null
}

case "$ACTION" in
  status)
    if is_running; then
      printf '%s: session %s is running\n' "$NAME" "$SESSION"
      exit 0
    fi
    printf '%s: session %s is not running\n' "$NAME" "$SESSION"
    exit 1
    ;;
  stop)
    if ! is_running; then
      printf '%s: session %s is not running\n' "$NAME" "$SESSION"
      exit 0
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
      printf 'stop session %s\n' "$SESSION"
      exit 0
    fi
    if have_tmux && tmux has-session -t "=$SESSION" 2>/dev/null; then
      tmux kill-session -t "=$SESSION"
    else
      # setsid made the launcher a process-group leader: signal the whole group.
      kill -TERM -- "-$(<"$PID_FILE")"
    fi
    rm -f "$PID_FILE"
    printf '%s: stopped session %s\n' "$NAME" "$SESSION"
    exit 0
    ;;
esac

((${#CMD[@]})) || die "no command given after '--'"
[[ -n "$LOG" ]] || die "--log=FILE is required"
if is_running; then
  if [[ "$IF_IDLE" == 1 ]]; then
    printf '%s: session %s is already running; leaving it alone\n' "$NAME" "$SESSION"
    exit 0
  fi
  printf '%s: error: session %s is already running on this VM (the TPU serves one process):%s\n' \
    "$NAME" "$SESSION" " follow it with logs.sh, or stop it first (train.sh --stop)" >&2
  exit 3
fi

if [[ "$IF_IDLE" == 1 && -f "$STATUS_FILE" ]]; then
  last="$(<"$STATUS_FILE")"
  case "$last" in
    0)
      printf '%s: session %s finished (exit 0); nothing to restart\n' "$NAME" "$SESSION"
      exit 0
      ;;
    "$EXIT_BAD_INPUT" | "$EXIT_NON_FINITE")
      printf '%s: error: session %s last exited with status %s (%s=bad input, %s=non-finite loss): %s\n' \
        "$NAME" "$SESSION" "$last" "$EXIT_BAD_INPUT" "$EXIT_NON_FINITE" \
        "not restarting it; read $LOG, fix the cause, then start it again without --if-idle" >&2
      exit 4
      ;;
    "$EXIT_PREEMPTED") printf '%s: session %s was preempted (exit %s): restarting; it resumes from its checkpoint\n' \
      "$NAME" "$SESSION" "$last" ;;
    *) printf '%s: session %s stopped with status %s: restarting; it resumes from its last checkpoint\n' \
      "$NAME" "$SESSION" "$last" ;;
  esac
fi

if [[ "$DRY_RUN" == 1 ]]; then
  printf '%s >> %s 2>&1\n' "$(quote_cmd "${CMD[@]}")" "$(quote_cmd "$LOG")"
  exit 0
fi

mkdir -p "$RUN_DIR"
case "$LOG" in */*) mkdir -p "${LOG%/*}" ;; esac
printf '=== %s: %s starts: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SESSION" \
  "$(quote_cmd "${CMD[@]}")" >>"$LOG"

if [[ "$FOREGROUND" == 1 ]]; then
  set +e
  "${CMD[@]}" 2>&1 | tee -a "$LOG"
  status=${PIPESTATUS[0]}
  set -e
  printf '%s\n' "$status" >"$STATUS_FILE"
  printf '=== %s: %s exited with status %d\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SESSION" \
    "$status" >>"$LOG"
  exit "$status"
fi

# The launcher file holds the command already quoted for bash, so neither tmux nor nohup has to
# re-parse it. Its $status and $(date) are meant to expand when the launcher runs, not here.
# shellcheck disable=SC2016
{
  printf '#!/usr/bin/env bash\n'
  printf 'cd %s || exit 1\n' "$(quote_cmd "$PWD")"
  printf 'export PATH=%s\n' "$(quote_cmd "$PATH")"
  printf '%s >> %s 2>&1\n' "$(quote_cmd "${CMD[@]}")" "$(quote_cmd "$LOG")"
  printf 'status=$?\n'
  printf 'printf "%%s\\n" "$status" > %s\n' "$(quote_cmd "$STATUS_FILE")"
  printf 'printf %s "$(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)" %s "$status" >> %s\n' \
    "'=== %s: %s exited with status %d\\n'" "$(quote_cmd "$SESSION")" "$(quote_cmd "$LOG")"
  printf 'rm -f %s\n' "$(quote_cmd "$PID_FILE")"
  printf 'exit "$status"\n'
} >"$LAUNCHER"

if have_tmux; then
  tmux new-session -d -s "$SESSION" "bash $(quote_cmd "$LAUNCHER")"
  how="tmux session '$SESSION' (attach: tmux attach -t $SESSION)"
else
  setsid nohup bash "$LAUNCHER" >/dev/null 2>&1 </dev/null &
  printf '%s\n' "$!" >"$PID_FILE"
  how="background process $! (nohup)"
fi
printf '%s: started %s in %s; log: %s\n' "$NAME" "${CMD[0]}" "$how" "$LOG"
