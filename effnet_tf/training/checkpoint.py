"""Checkpoints of a run: model, optimizer (slots, EMA, iterations -> LR) and progress.

``tf.train.CheckpointManager`` writes the data files first and the ``checkpoint`` index last,
so a run killed at any moment (SIGKILL, TPU preemption) leaves the previous checkpoint usable.
Checkpoints are numbered by global step. Progress is a ``tf.Variable`` with the global step:
epoch, step within the epoch and progressive stage are all derived from it (the schedule is a
pure function of the epoch), so nothing else needs saving.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Tuple

import tensorflow as tf

from effnet_tf.storage import paths
from effnet_tf.storage.errors import error_line
from effnet_tf.storage.paths import join
from effnet_tf.storage.run_directory import checkpoints_on_disk, latest_checkpoint_in

def index_is_sound(directory: str) -> bool:
    """Whether ``directory/checkpoint`` exists and parses (TF only logs "Checkpoint ignored" when
    it does not, and its CheckpointManager then starts an empty history)."""
    return tf.train.get_checkpoint_state(directory) is not None

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
        self.index_damaged = False
        self.max_to_keep = max_to_keep
        # A remote TPU host cannot write to this machine's disk: do the I/O locally.
        self.options = tf.train.CheckpointOptions(experimental_io_device=io_device) if io_device else None

    @property
    def latest(self) -> Optional[str]:
        """The latest checkpoint of the run (the chief's)."""
        return latest_checkpoint_in(self.directory, self.manager.latest_checkpoint if self._is_writer else None)

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
        on_disk = checkpoints_on_disk(self.directory)
        if not state and on_disk:
            # A missing or damaged index must not look like an empty run (a restart from step 0
            # would overwrite the checkpoints): the files on disk are the history.
            candidates = [prefix for _, prefix in reversed(on_disk)]
            self.index_damaged = True
            if warn is not None:
                index = join(self.directory, "checkpoint")
                warn(f"the checkpoint index {index} is {'damaged' if paths.exists(index) else 'missing'}; found "
                     f"{len(on_disk)} checkpoint(s) on disk ({', '.join(f'ckpt-{s}' for s, _ in on_disk)}) and "
                     "resuming from the newest that reads back.")
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
            if self.index_damaged and self._is_writer:
                self._rewrite_index(candidate)
            return candidate
        if failures:
            raise CheckpointRestoreError(f"no checkpoint in {self.directory} could be restored: {'; '.join(failures)}. "
                                         "Move the damaged files away, or use a new --model_dir.")
        return None

    def _rewrite_index(self, latest: str) -> None:
        """Writes a sound index ending at ``latest`` and reopens the managers on it, so the next
        saves rotate the old checkpoints as usual instead of ignoring them."""
        steps = [prefix for _, prefix in checkpoints_on_disk(self.directory)]
        keep = steps[:steps.index(latest) + 1] if latest in steps else [latest]
        tf.compat.v1.train.update_checkpoint_state(self.directory, latest, all_model_checkpoint_paths=keep)
        self.manager = self._writer = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                                 max_to_keep=self.max_to_keep)
        self.index_damaged = False

    def remove_stale_temporaries(self) -> List[str]:
        """Removes ``ckpt-*_temp*`` directories that a save killed mid-way left (the writer only,
        which holds the run's lock, so no save of another process can be under way)."""
        if not self._is_writer:
            return []
        stale = [p for p in tf.io.gfile.glob(join(self.directory, "ckpt-*_temp*")) if tf.io.gfile.isdir(p)]
        for path in stale:
            tf.io.gfile.rmtree(path)
        return stale

    def quarantine_from(self, step: int) -> Tuple[List[str], Optional[str]]:
        """Moves the checkpoints of ``step`` and later into ``diverged-step-<step>/`` beside them
        (kept, out of the run's history) and points the index at the newest earlier one; returns
        (the moved files' new prefixes, the newest remaining prefix or None). The writer only."""
        later = [(s, p) for s, p in checkpoints_on_disk(self.directory) if s >= step]
        if not self._is_writer or not later:
            return [], self.latest
        target = join(self.directory, f"diverged-step-{step}")
        tf.io.gfile.makedirs(target)
        for _, prefix in later:
            for name in tf.io.gfile.glob(prefix + ".*"):
                tf.io.gfile.rename(name, join(target, paths.basename(name)), overwrite=True)
        remaining = [p for _, p in checkpoints_on_disk(self.directory)]
        index = join(self.directory, "checkpoint")
        if remaining:
            tf.compat.v1.train.update_checkpoint_state(self.directory, remaining[-1],
                                                       all_model_checkpoint_paths=remaining)
        elif paths.exists(index):
            tf.io.gfile.remove(index)
        self.manager = self._writer = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                                 max_to_keep=self.max_to_keep)
        self._saved_step = None
        moved = [join(target, paths.basename(p)) for _, p in later]
        return moved, (remaining[-1] if remaining else None)

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
