"""Preemption: a termination signal becomes "save at the next step boundary, then stop".

GCE and Cloud TPU VMs announce a preemption or maintenance stop by sending SIGTERM to the
processes, then kill them after a short grace period (about 30 s on spot VMs).
``PreemptionWatcher`` catches SIGTERM; at every step boundary the training loop asks
``should_stop()``, and when it says yes it saves a checkpoint at that step on every worker and
raises ``Preempted``; ``effnet-train`` then exits with a documented code (docs/tpu.md) and the
same command resumes from that exact step.

Why not ``tf.distribute.experimental.PreemptionCheckpointHandler``: in TF 2.21 it only acts on
Google-internal TPUs and, on GCP, on GPU VMs (through maintenance events, not SIGTERM); on GCE
CPU and Cloud TPU VMs it logs "does not support usage with TPU or CPU device on GCP" and
never saves. The agreement it builds from the coordination service is built here from one
all-reduce on the strategy itself, so it holds for every strategy and platform.

A second SIGTERM while the checkpoint is being written changes nothing: the handler stays
installed until training returns, and ``tf.train.CheckpointManager`` writes a new checkpoint
before it updates the index, so even a SIGKILL leaves the previous checkpoint intact.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, List, Optional, Sequence

import tensorflow as tf

from effnet_tf.training.strategy import WorkerRole


class Preempted(Exception):
    """Training stopped on a termination signal after a checkpoint at a step boundary."""

    def __init__(self, global_step: int, checkpoint: Optional[str], signal_name: str = "SIGTERM received",
                 message: Optional[str] = None):
        self.global_step = int(global_step)
        self.checkpoint = checkpoint
        self.signal_name = signal_name
        super().__init__(message or f"{signal_name}: stopped at global step {global_step} with checkpoint "
                                    f"{checkpoint}; run the same command again to resume from it.")


# Background work abandoned on a signal (an export): the process must not wait for it at exit.
_abandoned: List[threading.Thread] = []


def abandoned_work_running() -> bool:
    """True while work abandoned on a signal still runs in a background thread (``effnet-train``
    then ends the process at once instead of waiting for it)."""
    return any(thread.is_alive() for thread in _abandoned)


class Interrupted(Exception):
    """A signal arrived while ``PreemptionWatcher.run_unless_signalled`` waited for ``work``."""

    def __init__(self, signal_name: str, work: str):
        self.signal_name, self.work = signal_name, work
        super().__init__(f"{signal_name} during the {work}")


class PreemptionWatcher:
    """Watches for ``signals`` while active (``with watcher:``); ``should_stop()`` agrees across workers.

    ``say`` prints the one line a user sees when the signal arrives.
    """

    def __init__(self, strategy: tf.distribute.Strategy, role: WorkerRole,
                 signals: Sequence[int] = (signal.SIGTERM,), say: Callable[[str], None] = print):
        self.strategy = strategy
        self.role = role
        self.signals = tuple(signals)
        self.say = say
        self._event = threading.Event()
        self._received: Optional[str] = None
        self._previous = {}
        self._any_worker = None
        self.exporting = False  # set during the end-of-run export: a signal abandons it

    # Signal handling -------------------------------------------------------------------------

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            self.say(f"effnet-train: {name} received again; still finishing the checkpoint.")
            return
        self._received = f"{name} received"
        self._event.set()
        if self.exporting:
            self.say(f"effnet-train: {name} received: abandoning the export (training is complete and "
                     "checkpointed), then stopping.")
        else:
            self.say(f"effnet-train: {name} received: saving a checkpoint at the next step boundary, then stopping.")

    def __enter__(self) -> "PreemptionWatcher":
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False

    @property
    def event(self) -> threading.Event:
        """Set when a signal arrives (work in other threads polls it)."""
        return self._event

    def run_unless_signalled(self, work: Callable[[], Any], name: str, poll_s: float = 0.1) -> Any:
        """Runs ``work()`` in a background thread and returns its result; when a signal arrives
        first, returns at once by raising ``Interrupted`` and leaves the thread to notice
        ``event`` (the export checks it before its final rename, so it never lands)."""
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = work()
            except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
                outcome["error"] = error

        thread = threading.Thread(target=target, name=f"effnet-{name}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(poll_s)
            if self.requested and thread.is_alive():
                _abandoned.append(thread)
                raise Interrupted(self.signal_name, name)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    # Decisions ---------------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """Whether this process received a signal."""
        return self._event.is_set()

    @property
    def signal_name(self) -> str:
        """What stopped the run, for messages (e.g. "SIGTERM received")."""
        return self._received or "SIGTERM received"

    def should_stop(self) -> bool:
        """True when any worker received a signal. Every worker must call this at the same step
        boundaries: with several workers it is one all-reduce of each worker's flag."""
        if not self.role.multi_worker:
            return self.requested
        if self._any_worker is None:
            strategy = self.strategy

            @tf.function
            def any_worker(flag):
                def replica_fn(value):
                    return tf.distribute.get_replica_context().all_reduce(
                        tf.distribute.ReduceOp.SUM, tf.identity(value))

                summed = strategy.run(replica_fn, args=(flag,))
                return strategy.experimental_local_results(summed)[0]

            self._any_worker = any_worker
        stop = float(self._any_worker(tf.constant(1.0 if self.requested else 0.0))) > 0
        if stop and not self._received:
            self._received = "SIGTERM received by another worker"
        return stop
