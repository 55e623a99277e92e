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

log = logging.getLogger(__name__)


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
    """A run's checkpoint (``make_checkpoint``) with its manager in ``directory``."""

    def __init__(self, directory: str, model, optimizer, progress: Progress, max_to_keep: int = 3,
                 io_device: Optional[str] = None):
        self.directory = directory
        self.progress = progress
        self.checkpoint = make_checkpoint(model, optimizer, progress)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
        # A remote TPU host cannot write to this machine's disk: do the I/O locally.
        self.options = tf.train.CheckpointOptions(experimental_io_device=io_device) if io_device else None

    @property
    def latest(self) -> Optional[str]:
        return self.manager.latest_checkpoint

    def restore(self, path: Optional[str] = None) -> Optional[str]:
        """Restores ``path`` (default: the latest); returns the path restored or None if there is none."""
        path = path or self.latest
        if not path:
            return None
        status = self.checkpoint.restore(path, options=self.options)
        # Everything we save must come back; objects created later (e.g. metrics) may be absent.
        status.assert_existing_objects_matched()
        log.info("Restored %s (step %d)", path, self.progress.global_step)
        return path

    def save(self) -> str:
        """Saves at the current global step (no-op if that step is already the latest checkpoint)."""
        step = self.progress.global_step
        if self.latest and self.latest.endswith(f"-{step}"):
            return self.latest
        return self.manager.save(checkpoint_number=step, options=self.options)
