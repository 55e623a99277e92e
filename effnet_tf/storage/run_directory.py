"""``RunDirectory``: every path of one training run, and whether this process writes them.

Layout (local or gs://)::

    <model_dir>/config.yaml        the resolved config the run trained with
    <model_dir>/checkpoints/       tf.train.CheckpointManager files (ckpt-<global step>)
    <model_dir>/logs/              TensorBoard events (train/, validation/, progressive/)
    <model_dir>/progress.jsonl     one JSON record per run start, stage, epoch, eval and run end
    <model_dir>/export/            the default export directory (saved_model/, model.keras, ...)

Only a *writer* process writes config.yaml, progress.jsonl, TensorBoard events and exports: on
several workers or TPU hosts every process runs the same command, and one of them (the chief)
owns the shared files. Checkpoints are the exception: every worker takes part in a save (see
``checkpoint_directory``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from effnet_tf.storage import paths

_PREFIX = re.compile(r"^ckpt-(\d+)$")


def checkpoints_on_disk(directory: str) -> List[Tuple[int, str]]:
    """``[(step, prefix)]`` of every ``ckpt-<step>`` whose ``.index`` file is in ``directory``, by
    step: what the run holds whatever its ``checkpoint`` index file says."""
    found = []
    for index in tf.io.gfile.glob(paths.join(directory, "ckpt-*.index")):
        prefix = index[:-len(".index")]
        match = _PREFIX.match(paths.basename(prefix))
        if match:
            found.append((int(match.group(1)), prefix))
    return sorted(found)


def latest_checkpoint_in(directory: str, index_latest: Optional[str] = None) -> Optional[str]:
    """``index_latest`` (default: what the index names), or the newest checkpoint on disk when the
    index is missing or damaged."""
    latest = index_latest or tf.train.latest_checkpoint(directory)
    if latest is None:
        on_disk = checkpoints_on_disk(directory)
        latest = on_disk[-1][1] if on_disk else None
    return latest


class RunDirectory:
    """The paths of the run rooted at ``root``; ``writer`` says whether this process writes them."""

    CONFIG_FILE = "config.yaml"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    PROGRESS_FILE = "progress.jsonl"
    EXPORT = "export"

    def __init__(self, root: str, *, writer: bool = True, worker_id: int = 0):
        if not root:
            raise ValueError("A run directory needs a path (runtime.model_dir / --model_dir).")
        self.root = str(root).rstrip("/") if paths.is_remote(root) else str(root)
        self.writer = bool(writer)
        self.worker_id = int(worker_id)

    def __repr__(self) -> str:
        return f"RunDirectory({self.root!r}, writer={self.writer})"

    def path(self, *parts: str) -> str:
        return paths.join(self.root, *parts)

    @property
    def config_file(self) -> str:
        return self.path(self.CONFIG_FILE)

    @property
    def checkpoints(self) -> str:
        return self.path(self.CHECKPOINTS)

    @property
    def logs(self) -> str:
        return self.path(self.LOGS)

    @property
    def progress_file(self) -> str:
        return self.path(self.PROGRESS_FILE)

    @property
    def export(self) -> str:
        return self.path(self.EXPORT)

    def checkpoint_directory(self) -> str:
        """Where this process saves checkpoints.

        TF's multi-worker rule: every worker takes part in a save (the variables are mirrored
        and the save is a collective), but only the chief's copy is kept; the others write to a
        worker-specific temporary directory, deleted after each save.
        """
        if self.writer:
            return self.checkpoints
        return self.path(f"{self.CHECKPOINTS}_tmp_worker{self.worker_id}")

    # Reading -----------------------------------------------------------------------------------

    def is_run(self) -> bool:
        """True when the directory holds a run (its config.yaml or checkpoints/)."""
        return paths.exists(self.config_file) or tf.io.gfile.isdir(self.checkpoints)

    def latest_checkpoint(self) -> Optional[str]:
        """The index's latest checkpoint; when the index is missing or damaged, the newest on disk."""
        return latest_checkpoint_in(self.checkpoints)

    def read_progress(self) -> List[Dict]:
        """The records of progress.jsonl (a line cut by a killed process is skipped)."""
        if not paths.exists(self.progress_file):
            return []
        records = []
        for line in paths.read_text(self.progress_file).splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
        return records

    # Writing (the writer process only) -----------------------------------------------------------

    def create(self) -> None:
        """Creates the directory (the writer only); a clear error when it cannot be one."""
        if not self.writer:
            return
        if paths.exists(self.root) and not tf.io.gfile.isdir(self.root):
            raise NotADirectoryError(f"model_dir {self.root!r} is a file, not a directory: pass a directory "
                                     "(--model_dir / runtime.model_dir).")
        try:
            paths.makedirs(self.root)
        except (tf.errors.OpError, OSError) as error:
            reason = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
            raise PermissionError(f"cannot create model_dir {self.root!r}: {reason.strip()} (a path inside a "
                                  "file, or no permission to write there).") from error

    def write_config(self, text: str) -> Optional[str]:
        """Writes config.yaml (atomically); returns its path, or None in a non-writer process."""
        if not self.writer:
            return None
        try:
            paths.write_text(self.config_file, text)
        except (tf.errors.OpError, OSError) as error:
            reason = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
            raise PermissionError(f"cannot write to model_dir {self.root!r}: {reason.strip()} (it must be "
                                  "writable by this process; on gs:// check the bucket's permissions).") from error
        return self.config_file

    def record(self, record: Dict) -> None:
        """Appends ``record`` (with the time) to progress.jsonl."""
        if self.writer:
            line = json.dumps(dict(record, time=round(time.time(), 3)), sort_keys=False)
            paths.append_line(self.progress_file, line)
