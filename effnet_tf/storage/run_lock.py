"""``RunLock``: one training process per run directory.

Two trainers on one ``model_dir`` would interleave ``progress.jsonl`` and mix the checkpoints of
two configs. The writer (chief) takes ``<model_dir>/run.lock`` before it writes anything and
holds it until the run ends; the file names the holder (host, pid, start time) and carries a
heartbeat that a thread refreshes every ``HEARTBEAT_S`` seconds.

A lock is *stale*, and is taken over with a console line saying so, when its holder is a process
of this host that no longer exists, or when its heartbeat is older than ``STALE_S`` (a holder on
another host that died without releasing it, e.g. a VM lost to a hard preemption). A lock held by
this same process is re-entrant.

Atomicity: on a local or NFS path the file is created with ``O_CREAT | O_EXCL``, so of two
processes that start together exactly one gets it. ``tf.io.gfile`` has no create-if-absent for
gs:// (GCS itself has ``ifGenerationMatch=0``, which tf.io.gfile does not expose): there the lock
is check-then-write, so two trainers started within the same second or so can both pass. What it
still protects on gs:// is the common case, a second run started while the first is running.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable, Dict, Optional

from effnet_tf.storage import paths

HEARTBEAT_S = 30.0
STALE_S = 180.0


class RunLockedError(FileExistsError):
    """Another live process holds the run directory's lock (bad input: exit 2)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


class RunLock:
    """Context manager over ``<root>/run.lock``; ``say`` prints the take-over line."""

    FILE = "run.lock"

    def __init__(self, root: str, say: Callable[[str], None] = print,
                 heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.path = paths.join(root, self.FILE)
        self.say = say
        self.heartbeat_s = float(heartbeat_s)
        self.stale_s = float(stale_s)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        self._owned = False
        self._borrowed = False  # this process already held the lock through another RunLock
        self._depth = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # Reading ------------------------------------------------------------------------------------

    def holder(self) -> Optional[Dict]:
        """The lock file's record, ``{}`` when it is unreadable (being written, or damaged), or
        None when there is no lock."""
        try:
            text = paths.read_text(self.path)
        except Exception:  # noqa: BLE001 (gone between the check and the read, or unreadable)
            return None if not paths.exists(self.path) else {}
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _is_mine(self, holder: Dict) -> bool:
        return holder.get("host") == self.host and holder.get("pid") == self.pid

    def _stale_reason(self, holder: Dict) -> Optional[str]:
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
            return f"process {holder['pid']} on this host has ended"
        beat = holder.get("heartbeat")
        if not isinstance(beat, (int, float)):
            beat = paths.mtime(self.path)
        if beat is not None and time.time() - beat > self.stale_s:
            return f"no heartbeat for {time.time() - beat:.0f} s (> {self.stale_s:.0f} s)"
        return None

    # Taking and releasing -----------------------------------------------------------------------

    def _record(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "started": round(self.started, 3),
                           "heartbeat": round(time.time(), 3)})

    def _create(self) -> bool:
        """Creates the lock file if there is none; True when this process now holds it."""
        if paths.is_remote(self.path):
            if paths.exists(self.path):
                return False
            paths.write_text(self.path, self._record())
            return True
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise PermissionError(f"cannot create the run lock {self.path}: {error.strerror} (training writes to "
                                  "model_dir: it must be writable by this process).") from error
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(self._record())
        return True

    def acquire(self) -> None:
        """Takes the lock, or raises ``RunLockedError`` naming the holder."""
        if self._owned:
            self._depth += 1
            return
        for _ in range(3):  # a stale lock removed by someone else in between: try again
            if self._create():
                break
            holder = self.holder()
            if holder is None:
                continue
            if holder and self._is_mine(holder):
                self._owned, self._borrowed, self._depth = True, True, 1
                return
            reason = self._stale_reason(holder) if holder else None
            if holder == {} and reason is None:
                age = time.time() - (paths.mtime(self.path) or time.time())
                reason = f"unreadable lock file, untouched for {age:.0f} s" if age > self.stale_s else None
            if reason is None:
                raise RunLockedError(self._held_message(holder))
            self.say(f"Taking over the stale run lock {self.path} ({reason}; it was held by "
                     f"{self._describe(holder)}).")
            paths.remove(self.path)
        else:
            raise RunLockedError(self._held_message(self.holder() or {}))
        self._owned, self._borrowed, self._depth = True, False, 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="effnet-run-lock", daemon=True)
        self._thread.start()

    def _describe(self, holder: Dict) -> str:
        if not holder:
            return "an unknown process (the lock file is unreadable)"
        started = holder.get("started")
        return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
                f"{_when(started) if isinstance(started, (int, float)) else '?'}")

    def _held_message(self, holder: Dict) -> str:
        return (f"model_dir {paths.parent(self.path)} is in use by another training run ({self._describe(holder)}; "
                f"lock {self.path}). Wait for it to end, use another --model_dir, or, if that process is gone, "
                f"delete the lock file (a lock without a heartbeat for {self.stale_s:.0f} s is taken over).")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                holder = self.holder()
                if holder and self._is_mine(holder):
                    paths.write_text(self.path, self._record())
            except Exception:  # noqa: BLE001 (a missed heartbeat must not end the run)
                pass

    def release(self) -> None:
        """Releases the lock (the outermost release removes the file if it is still ours)."""
        if not self._owned:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        self._owned = False
        if self._borrowed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = self.holder()
        if holder and self._is_mine(holder):
            paths.remove(self.path)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
