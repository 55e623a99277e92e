"""Keras callbacks of the training driver: progress + checkpoints + NaN stop, evaluation,
and the progressive-learning scalars (TensorBoard and a JSON-lines progress file)."""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from effnet_tf.storage import paths
from effnet_tf.training.checkpoint import CheckpointState
from effnet_tf.training.preemption import Preempted, PreemptionWatcher


class DataExhaustedError(ValueError):
    """The training dataset ended before the epoch's steps were done (unusable data)."""


class NonFiniteLossError(FloatingPointError):
    """The training loss, the eval loss or the weights became NaN/infinite (or the weights exploded);
    training stopped before any further checkpoint."""


#: A trainable weight larger than this in magnitude means the run has diverged. Trained networks
#: keep |w| well below 100 (weight decay, BatchNorm); a learning rate 1e6 too high reached 1e17
#: after one step, measured on a tiny network.
DIVERGED_WEIGHT = 1e6
#: A mean training loss above this (nats per image) means the run has diverged: a uniform guess
#: over 1,000 classes costs 6.9, and the weight-decay term of a sound network is below 10.
DIVERGED_LOSS = 1e3


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class ProgressCheckpoint(keras.callbacks.Callback):
    """Advances the global step, stops on a non-finite loss, checkpoints, and stops on preemption.

    One callback does all of it so the order is fixed: the step is counted, the loss is
    checked, and only then a checkpoint may be written; a NaN raises before anything is saved,
    which leaves the last good checkpoint the latest one. A preemption (``preemption``'s
    ``should_stop``, asked at every step boundary on every worker) saves this step and raises
    ``Preempted``.

    ``begin_segment(epoch_offset_steps)`` tells it where in its first epoch a ``fit`` call starts
    (non-zero only when a run resumes mid-epoch).
    """

    def __init__(self, state: CheckpointState, steps_per_epoch: int, every_steps: int = 0,
                 preemption: Optional[PreemptionWatcher] = None):
        super().__init__()
        self._all_finite = None
        self.state = state
        self.preemption = preemption
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = int(every_steps)
        self._offset = 0
        self._epoch = 0
        self._first_epoch_of_segment = True

    def begin_segment(self, offset_steps: int = 0) -> None:
        self._offset = int(offset_steps)
        self._first_epoch_of_segment = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if not self._first_epoch_of_segment:
            self._offset = 0
        self._first_epoch_of_segment = False

    def _fix(self, moved=(), latest: Optional[str] = None) -> str:
        latest = self.state.latest if latest is None and not moved else latest
        where = (f"the newest good checkpoint is {latest!r} and the rerun resumes from it" if latest else
                 "no good checkpoint remains, so the rerun starts from the beginning")
        if moved:
            names = ", ".join(paths.basename(p) for p in moved)
            where = (f"the checkpoint that gave this loss ({names}) was moved to {paths.parent(moved[0])} "
                     f"(kept, out of the run's history); {where}")
        return (f"Stopped without saving; {where}: lower train.base_learning_rate (now {self._peak_lr()}) and run "
                "the same command again, or check the data.")

    def _peak_lr(self) -> str:
        try:
            return f"{float(self.model.optimizer.learning_rate):.3g} at this step"
        except Exception:  # noqa: BLE001 -- a message must never fail
            return "see config.yaml"

    def _check(self, logs, where: str) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not (_finite(loss) and float(loss) <= DIVERGED_LOSS):
            step = self.state.progress.global_step
            what = "" if not _finite(loss) else f" (above {DIVERGED_LOSS:g}: diverged)"
            # Step t's loss is computed with the weights after step t - 1. A finite but exploded
            # loss says those weights have diverged (while small enough to pass the save check):
            # their checkpoint is moved aside. A NaN can as well come from the data (a NaN label
            # or pixel), so the checkpoint of step t - 1, checked at its save, stays the latest.
            moved, latest = self.state.quarantine_from(step - 1) if _finite(loss) else ([], None)
            raise NonFiniteLossError(
                f"Training loss is {float(loss):.4g}{what} at {where} (global step {step}, epoch {self._epoch + 1}). "
                f"{self._fix(moved, latest)}")

    def _weights_state(self):
        """(all variables finite, largest |trainable weight|), in one compiled call."""
        if self._all_finite is None:
            variables = list(self.model.variables) + list(getattr(self.model.optimizer, "variables", []))
            variables = [v for v in variables if "float" in str(v.dtype)]
            trainable = [v for v in self.model.trainable_variables if "float" in str(v.dtype)]
            self._all_finite = tf.function(lambda: (
                tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables]),
                tf.reduce_max([tf.reduce_max(tf.abs(tf.cast(v, tf.float32))) for v in trainable])))
        finite, largest = self._all_finite()
        return bool(finite), float(largest)

    def _save(self, where: str) -> None:
        # The loss of step t is computed before step t's update: a non-finite gradient shows up
        # in the weights one step before it shows in the loss. Never checkpoint such weights, nor
        # weights that have exploded while staying finite (BatchNorm keeps such a network's loss
        # finite for a while, and every rerun from them diverges again).
        finite, largest = self._weights_state()
        if not finite or not largest <= DIVERGED_WEIGHT:
            what = ("Non-finite weights" if not finite else
                    f"Diverged weights (largest |weight| {largest:.3g} > {DIVERGED_WEIGHT:.0e})")
            raise NonFiniteLossError(
                f"{what} at {where} (global step {self.state.progress.global_step}, epoch {self._epoch + 1}). "
                f"{self._fix()}")
        return self.state.save()

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + self._offset + int(batch) + 1
        previous = self.state.progress.global_step
        self.state.progress.step.assign(step)
        self._check(logs, f"batch {int(batch) + 1}")
        if self.every_steps and step // self.every_steps > previous // self.every_steps:
            self._save(f"batch {int(batch) + 1}")
        if self.preemption is not None and self.preemption.should_stop():
            path = self._save(f"batch {int(batch) + 1}")
            raise Preempted(step, path, self.preemption.signal_name)

    def on_epoch_end(self, epoch, logs=None):
        reached, planned = self.state.progress.global_step, (epoch + 1) * self.steps_per_epoch
        if reached < planned:  # the training data ran out (it repeats forever when it is sound)
            raise DataExhaustedError(
                f"the training data ran out in epoch {epoch + 1} after global step {reached} of {planned}")
        self._check(logs, "the end of the epoch")
        self._save("the end of the epoch")


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, headed with the run's epoch numbers in every stage ("Epoch 3/8").

    Keras numbers epochs by the ``fit`` call (one per stage) and heads nothing in a one-epoch
    call, so a run's first stage often had no header and later ones said "Epoch 4/4".
    """

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = int(total_epochs)

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class PeriodicEvaluation(keras.callbacks.Callback):
    """Evaluates at the end of chosen epochs and adds ``val_*`` to the epoch logs (so the
    progress bar, History and TensorBoard show them)."""

    def __init__(self, evaluate: Callable[[], Dict[str, float]], should_evaluate: Callable[[int], bool]):
        super().__init__()
        self.evaluate = evaluate
        self.should_evaluate = should_evaluate
        self.last: Optional[Dict[str, float]] = None
        self.last_seconds: Optional[float] = None  # wall time of the latest evaluation

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.should_evaluate(epoch):
            return
        start = time.perf_counter()
        results = self.evaluate()
        self.last_seconds = time.perf_counter() - start
        self.last = results
        for name, value in results.items():
            if name != "ema":  # a flag, not a metric
                logs[f"val_{name}"] = value


class ProgressiveLogger(keras.callbacks.Callback):
    """Per-epoch scalars of the schedule and throughput, to TensorBoard and ``progress.jsonl``.

    Where an epoch's time went, in its ``progress.jsonl`` record: ``train_seconds`` (first step to
    last step, without the end-of-epoch evaluation), ``compile_seconds`` (when a train program was
    compiled in the epoch: its first step's time minus the median step, i.e. trace, graph
    optimization and input warm-up), ``eval_seconds`` (the evaluation after the epoch, if any) and
    ``setup_seconds`` (the first epoch of a stage: from the stage's start to its first step, i.e.
    the new input pipeline and ``fit``'s set-up). ``images_per_second`` counts train time only.

    TensorBoard tags (step = epoch, as Keras' epoch scalars): ``progressive/image_size``,
    ``progressive/randaug_magnitude``, ``progressive/mixup_alpha``, ``progressive/cutmix_alpha``,
    ``progressive/dropout_rate``, ``progressive/drop_connect_rate``,
    ``perf/images_per_second``, ``compile/train_functions``, ``train/learning_rate``.
    """

    def __init__(self, log_dir: Optional[str], global_batch_size: int,
                 compile_count: Callable[[], int], learning_rate: Callable[[], float], write_json: Callable[[dict], None],
                 eval_seconds: Callable[[], Optional[float]] = lambda: None):
        super().__init__()
        self.eval_seconds = eval_seconds
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.global_batch_size = int(global_batch_size)
        self.compile_count = compile_count
        self.learning_rate = learning_rate
        self.write_json = write_json
        self.stage = None
        self._stage_start: Optional[float] = None
        self._steps = 0
        self._step_seconds: list = []
        self._batch_start = self._first_batch = self._last_batch_end = None
        self._compiled_before = 0

    def set_stage(self, stage) -> None:
        self.stage = stage
        self._stage_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0
        self._step_seconds = []
        self._first_batch = self._last_batch_end = None
        self._compiled_before = self.compile_count()

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()
        if self._first_batch is None:
            self._first_batch = self._batch_start

    def on_train_batch_end(self, batch, logs=None):
        self._steps = int(batch) + 1
        self._last_batch_end = time.perf_counter()
        if self._batch_start is not None:
            self._step_seconds.append(self._last_batch_end - self._batch_start)

    def _timing(self) -> dict:
        """The epoch's time split (see the class docstring)."""
        timing = {}
        if self._first_batch is not None and self._last_batch_end is not None:
            timing["train_seconds"] = round(self._last_batch_end - self._first_batch, 3)
            if self._stage_start is not None:  # the stage's first epoch in this process
                timing["setup_seconds"] = round(self._first_batch - self._stage_start, 3)
                self._stage_start = None
        if self.compile_count() > self._compiled_before and len(self._step_seconds) > 1:
            typical = float(np.median(self._step_seconds[1:]))
            timing["compile_seconds"] = round(max(self._step_seconds[0] - typical, 0.0), 3)
        eval_seconds = self.eval_seconds()
        if eval_seconds is not None:
            timing["eval_seconds"] = round(eval_seconds, 3)
        return timing

    def on_epoch_end(self, epoch, logs=None):
        timing = self._timing()
        seconds = max(timing.get("train_seconds", 0.0), 1e-9)
        images_per_second = self._steps * self.global_batch_size / seconds
        scalars = {
            "progressive/image_size": self.stage.image_size,
            "progressive/randaug_magnitude": self.stage.randaug_magnitude,
            "progressive/mixup_alpha": self.stage.mixup_alpha,
            "progressive/cutmix_alpha": self.stage.cutmix_alpha,
            "progressive/dropout_rate": self.stage.dropout_rate,
            "progressive/drop_connect_rate": self.stage.drop_connect_rate,
            "perf/images_per_second": images_per_second,
            "compile/train_functions": self.compile_count(),
            "train/learning_rate": self.learning_rate(),
        }
        if self.writer is not None:
            with self.writer.as_default(step=epoch):
                for tag, value in scalars.items():
                    tf.summary.scalar(tag, float(value))
            self.writer.flush()
        record = {
            "event": "epoch", "epoch": epoch + 1, "stage": self.stage.index, "image_size": self.stage.image_size,
            "randaug_magnitude": self.stage.randaug_magnitude, "mixup_alpha": self.stage.mixup_alpha,
            "cutmix_alpha": self.stage.cutmix_alpha, "dropout_rate": self.stage.dropout_rate,
            "drop_connect_rate": self.stage.drop_connect_rate, "steps": self._steps,
            "images_per_second": round(images_per_second, 2), "train_functions": self.compile_count(),
            "learning_rate": self.learning_rate(),
        }
        record.update(timing)
        record.update({k: float(v) for k, v in (logs or {}).items() if _is_number(v)})
        self.write_json(record)


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
