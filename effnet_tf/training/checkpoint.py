"""Checkpoints of a run: model, optimizer (slots, EMA, iterations -> LR) and progress.

``tf.train.CheckpointManager`` writes the data files first and the ``checkpoint`` index last,
so a run killed at any moment (SIGKILL, TPU preemption) leaves the previous checkpoint usable.
Checkpoints are numbered by global step. Progress is a ``tf.Variable`` with the global step:
epoch, step within the epoch and progressive stage are all derived from it (the schedule is a
pure function of the epoch), so nothing else needs saving.
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

from effnet_tf.storage.errors import error_line
from effnet_tf.storage.paths import join

log = logging.getLogger(__name__)


class CheckpointRestoreError(ValueError):
    """No checkpoint of the run could be read back (damaged files, another model)."""


class Progress(tf.Module):
    """The run's position: optimizer steps taken (``step``) with a fixed ``steps_per_epoch``."""

    def __init__(self, steps_per_epoch: int):
        super().__init__(name="progress")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.steps_per_epoch = tf.Variable(int(steps_per_epoch), dtype=tf.int64, trainable=False,
                                           name="steps_per_epoch")

    @property
    def global_step(self) -> int:
        return int(self.step.numpy())


def make_checkpoint(model, optimizer, progress: Progress) -> tf.train.Checkpoint:
    """The object graph every checkpoint of a run holds (training, eval, export and restore
    all build it here, so they agree on what is saved)."""
    return tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress)


class CheckpointState:
    """A run's checkpoint (``make_checkpoint``) with its manager in ``directory``.

    Under several workers every worker saves (a save reads the replicated variables, which can
    take a collective), but only the chief's files are kept: another worker passes its own
    ``write_directory``, which is deleted after each save (TF's multi-worker rule). Every
    worker restores from ``directory``. Whether a step is already saved is decided from what this
    process saved or restored, never from the file system, so all workers agree without talking.
    """

    def __init__(self, directory: str, model, optimizer, progress: Progress, max_to_keep: int = 3,
                 io_device: Optional[str] = None, write_directory: Optional[str] = None):
        self.directory = directory
        self.write_directory = write_directory or directory
        self.progress = progress
        self.checkpoint = make_checkpoint(model, optimizer, progress)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
        self._is_writer = self.write_directory == directory
        self._writer = self.manager if self._is_writer else tf.train.CheckpointManager(
            self.checkpoint, self.write_directory, max_to_keep=1)
        self._saved_step: Optional[int] = None
        # A remote TPU host cannot write to this machine's disk: do the I/O locally.
        self.options = tf.train.CheckpointOptions(experimental_io_device=io_device) if io_device else None

    @property
    def latest(self) -> Optional[str]:
        """The latest checkpoint of the run (the chief's)."""
        if self._is_writer:
            return self.manager.latest_checkpoint
        return tf.train.latest_checkpoint(self.directory)

    def _restore(self, path: str) -> None:
        status = self.checkpoint.restore(path, options=self.options)
        # Everything we save must come back; objects created later (e.g. metrics) may be absent.
        status.assert_existing_objects_matched()
        self._saved_step = self.progress.global_step
        log.info("Restored %s (step %d)", path, self.progress.global_step)

    def restore(self, path: Optional[str] = None, warn=None) -> Optional[str]:
        """Restores ``path``, or the latest checkpoint; returns the path restored (None: none).

        A latest checkpoint that cannot be read (a damaged file) is reported through ``warn``
        and the newest older one that can is restored instead; nothing is deleted. An explicit
        ``path`` that fails, or no readable checkpoint at all, raises ``CheckpointRestoreError``.
        """
        if path:
            try:
                self._restore(path)
            except Exception as error:  # noqa: BLE001 -- a damaged file raises OpError, IndexError, ...
                raise CheckpointRestoreError(f"checkpoint {path} could not be restored: {error_line(error)}") from error
            return path
        state = tf.train.get_checkpoint_state(self.directory)
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
        if state and state.model_checkpoint_path and state.model_checkpoint_path not in candidates:
            candidates.insert(0, state.model_checkpoint_path)
        failures = []
        for candidate in candidates:
            try:
                self._restore(candidate)
            except Exception as error:  # noqa: BLE001 -- a damaged file raises OpError, IndexError, ...
                failures.append(f"{candidate}: {error_line(error)}")
                continue
            if failures and warn is not None:
                warn(f"could not restore {'; '.join(failures)}; restored the older {candidate} instead "
                     "(nothing was deleted).")
            return candidate
        if failures:
            raise CheckpointRestoreError(f"no checkpoint in {self.directory} could be restored: {'; '.join(failures)}. "
                                         "Move the damaged files away, or use a new --model_dir.")
        return None

    def save(self) -> str:
        """Saves at the current global step (no-op if this step is already saved); returns the
        run's checkpoint path for that step."""
        step = self.progress.global_step
        if step != self._saved_step:
            self._writer.save(checkpoint_number=step, options=self.options)
            self._saved_step = step
            if not self._is_writer:
                tf.io.gfile.rmtree(self.write_directory)
        return join(self.directory, f"ckpt-{step}")
