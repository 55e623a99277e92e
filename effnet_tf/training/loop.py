"""The training loop: the plan's remaining stages, one ``model.fit`` each, with the callbacks.

Each stage sets its regularization, builds its dataset at the planned size and calls ``fit``
under that size's one compiled program (``TrainFunctionCache``); ``initial_epoch``/``epochs``
keep epoch numbers global, and a run resumed mid-epoch first finishes that epoch. Where a run
starts is the restored global step alone: the stage is recomputed from it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, List, Optional

import keras
import tensorflow as tf

from effnet_tf.model.regularization import set_regularization
from effnet_tf.model.transfer import set_trainable_parts
from effnet_tf import keras_internals
from effnet_tf.training import schedule as schedule_lib
from effnet_tf.training.callbacks import (
    DIVERGED_LOSS,
    DataExhaustedError,
    NonFiniteLossError,
    PeriodicEvaluation,
    ProgressCheckpoint,
    ProgressiveLogger,
    RunProgbar,
)
from effnet_tf.training.compile_cache import TestFunctionCache, TrainFunctionCache
from effnet_tf.training.health import TrainingHealth
from effnet_tf.training.ema import ema_weights
from effnet_tf.training.optimizer import reset_moments
from effnet_tf.training.plan import Plan
from effnet_tf.training.preemption import Preempted, PreemptionWatcher
from effnet_tf.training.task import Components, eval_dataset_fn, train_dataset_fn


def tensorboard_available() -> bool:
    """tf.summary needs the ``tensorboard`` package (TF 2.21 no longer installs it)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _fit_context(plan: Plan):
    """Around ``fit``: the data running out is our error (``DataExhaustedError``, naming the
    data), not Keras' warning that training goes on with fewer steps."""
    with keras_internals.data_may_end():
        try:
            yield
        except DataExhaustedError as error:
            d = plan.config.data
            raise DataExhaustedError(
                f"{error}: {d.name} split {d.train_split!r} yields fewer batches than train.steps_per_epoch="
                f"{plan.steps_per_epoch} x train.global_batch_size={plan.config.train.global_batch_size} need. "
                "Check its files (an unreadable shard yields no records) or lower train.steps_per_epoch."
            ) from None


class CheckpointMismatchError(ValueError):
    """A checkpoint that this plan cannot continue (e.g. another number of steps per epoch)."""


class TrainingLoop:
    """Trains ``components`` through ``plan`` on ``strategy`` with data from ``source``.

    ``say`` prints a user-facing line (the stage headers).
    """

    def __init__(self, plan: Plan, strategy: tf.distribute.Strategy, source, components: Components,
                 say: Callable[[str], None] = print):
        self.plan = plan
        self.strategy = strategy
        self.source = source
        self.model = components.model
        self.progress = components.progress
        self.checkpoint = components.checkpoint
        self.say = say
        self._records_unwritable = False
        self.train_cache = TrainFunctionCache(self.model, jit_compile=plan.jit_compile)
        self.test_cache = TestFunctionCache(self.model)
        self.last_eval: Optional[Dict[str, float]] = None  # the latest evaluation during training
        self.preemption: Optional[PreemptionWatcher] = None
        self.input_pipelines: set = set()  # (pipeline id, pipelines) of the training data read here
        self._phase: Optional[str] = None  # the trainable parts set last (fine-tuning)

    @property
    def optimizer(self):
        return getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)

    @property
    def global_step(self) -> int:
        return self.progress.global_step

    def record(self, record: dict) -> None:
        """Appends to progress.jsonl; a run directory this process cannot write (``--mode=eval``
        on a read-only copy) skips its records with one warning instead of failing the run."""
        if self.plan.run_dir is None or self._records_unwritable:
            return
        try:
            self.plan.run_dir.record(record)
        except (OSError, tf.errors.OpError) as error:
            self._records_unwritable = True
            reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
            self.say(f"effnet-train: warning: cannot write {self.plan.run_dir.progress_file} ({reason}); "
                     "progress records of this run are skipped.")

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def restore(self, path: Optional[str] = None) -> Optional[str]:
        """Restores ``path`` (default: the latest checkpoint); returns what was restored."""
        if self.checkpoint is None:
            if path:
                from effnet_tf.training.checkpoint import make_checkpoint

                make_checkpoint(self.model, self.model.optimizer, self.progress).restore(path).expect_partial()
            return path
        path = self.checkpoint.restore(path, warn=lambda message: self.say(f"effnet-train: warning: {message}"))
        self._reset_after_divergence(path)
        saved = int(self.progress.steps_per_epoch.numpy())
        if path and saved != self.plan.steps_per_epoch:
            raise CheckpointMismatchError(
                f"The checkpoint {path} was written with {saved} steps per epoch, this config has "
                f"{self.plan.steps_per_epoch} (train.global_batch_size / train.steps_per_epoch changed). Use a new "
                "--model_dir or the original settings."
            )
        return path

    def _reset_after_divergence(self, path: Optional[str]) -> None:
        """A session that stopped on divergence left a ``diverged`` record: resuming from a step
        before it, the optimizer's moments (which carry the exploding gradients) start afresh."""
        run_dir = self.plan.run_dir
        if not path or run_dir is None:
            return
        last = next((r for r in reversed(run_dir.read_progress()) if r.get("event") in ("diverged", "run_start")), None)
        if not last or last.get("event") != "diverged" or self.global_step > int(last.get("global_step", -1)):
            return
        with self.strategy.scope():
            count = reset_moments(self.optimizer)
        self.say(f"The previous session diverged at global step {last.get('global_step')}: resuming from {path} "
                 f"with the optimizer's moment estimates reset ({count} variables; the step count and the EMA "
                 "are kept).")

    # -----------------------------------------------------------------------------------------
    # Data and evaluation

    def train_dataset(self, stage: schedule_lib.Stage, start_epoch: int):
        """The distributed training dataset of ``stage`` (repeats forever)."""
        dataset_fn = train_dataset_fn(self.plan, self.source, stage, start_epoch)

        def recorded(input_context):
            # Which shards this process reads, as the strategy assigned them (for the worker's log).
            self.input_pipelines.add((input_context.input_pipeline_id, input_context.num_input_pipelines))
            return dataset_fn(input_context)

        return self.strategy.distribute_datasets_from_function(recorded)

    def eval_dataset(self):
        """The distributed evaluation dataset at the plan's eval size."""
        return self.strategy.distribute_datasets_from_function(eval_dataset_fn(self.plan, self.source))

    def evaluate(self, verbose: int = 0, use_ema: Optional[bool] = None) -> Dict[str, float]:
        """top-1/top-5/loss on the eval split at the eval size; the EMA weights when ``use_ema``
        (default ``eval.use_ema``) and the run keeps an EMA. ``ema`` says which weights were used."""
        c = self.plan.config
        use_ema = c.eval.use_ema if use_ema is None else use_ema
        with ema_weights(self.model, enabled=use_ema) as used_ema:
            results = self.test_cache.evaluate(self.plan.eval_size, self.eval_dataset(), steps=c.eval.steps,
                                               verbose=verbose)
        results = {k: float(v) for k, v in results.items()}
        results["ema"] = float(used_ema)
        loss = results.get("loss", 0.0)
        if not (math.isfinite(loss) and loss <= DIVERGED_LOSS):
            latest = self.checkpoint.latest if self.checkpoint else None
            raise NonFiniteLossError(
                f"eval loss is {loss:.4g} ({'EMA' if used_ema else 'trained'} weights, global step "
                f"{self.global_step}): the model has diverged. Train again with a lower train.base_learning_rate in "
                f"a new --model_dir (this run's checkpoints hold the diverged weights; newest: {latest!r}), or check "
                "the eval data.")
        return results

    # -----------------------------------------------------------------------------------------
    # Training

    def _learning_rate(self) -> float:
        return float(self.optimizer.learning_rate)

    def _regularization_loss(self) -> float:
        """The weight-decay term Keras adds to the reported training loss (now)."""
        with self.strategy.scope():
            return float(sum(float(loss) for loss in self.model.losses))

    def callbacks(self, evaluate_during: bool) -> List[keras.callbacks.Callback]:
        """Checkpoint + NaN stop, periodic evaluation, health checks, progressive scalars, TensorBoard."""
        c, run_dir = self.plan.config, self.plan.run_dir
        use_tensorboard = c.runtime.tensorboard and tensorboard_available() and run_dir is not None and run_dir.writer
        if c.runtime.tensorboard and not tensorboard_available():
            self.say("TensorBoard logs disabled: the `tensorboard` package is not installed (pip install tensorboard).")
        self.progress_callback = ProgressCheckpoint(self.checkpoint, self.plan.steps_per_epoch,
                                                    c.runtime.checkpoint_every_steps, preemption=self.preemption)
        evaluation = PeriodicEvaluation(self._evaluate_during, self.plan.should_evaluate) if evaluate_during else None

        def eval_seconds():  # the evaluation after this epoch (it runs before the logger), once
            seconds = evaluation.last_seconds if evaluation is not None else None
            if evaluation is not None:
                evaluation.last_seconds = None
            return seconds

        self.logger = ProgressiveLogger(
            run_dir.path(run_dir.LOGS, "progressive") if use_tensorboard else None,
            c.train.global_batch_size, lambda: self.train_cache.trace_count, self._learning_rate, self.record,
            eval_seconds=eval_seconds,
        )
        callbacks: List[keras.callbacks.Callback] = [self.progress_callback]
        if evaluation is not None:
            callbacks.append(evaluation)
        callbacks.append(self.logger)
        if c.runtime.verbose and (run_dir is None or run_dir.writer):
            callbacks.append(RunProgbar(self.plan.epochs))
        if use_tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(run_dir.logs, write_graph=False, update_freq="epoch",
                                                         profile_batch=0))
        # Last: after the evaluation (it reads val_top1) and after the progress bar ends its line.
        self.health = TrainingHealth(c, self.plan.epochs, warn=lambda message: self.say(f"effnet-train: warning: {message}"),
                                     record=self.record, regularization_loss=self._regularization_loss,
                                     steps_per_epoch=self.plan.steps_per_epoch)
        callbacks.append(self.health)
        return callbacks

    def _evaluate_during(self) -> Dict[str, float]:
        self.last_eval = self.evaluate()
        return self.last_eval

    def _phases(self, start: int, end: int):
        """``(phase, end_epoch)`` pieces of epochs ``[start, end)``, with the model's trainable parts
        set for each piece as it is reached: ``"head"`` (only the classifier, during
        ``train.freeze_backbone_epochs``) and ``"finetune"`` (``train.trainable_blocks`` last blocks),
        or one ``None`` piece when the whole network always trains."""
        t = self.plan.config.train
        head_until = t.freeze_backbone_epochs
        if not head_until and t.trainable_blocks is None:
            yield None, end
            return
        if start < head_until:
            self._set_phase("head")
            yield "head", min(end, head_until)
            start = min(end, head_until)
        if start < end:
            self._set_phase("finetune")
            yield "finetune", end

    def _set_phase(self, phase: str) -> None:
        t = self.plan.config.train
        counts = set_trainable_parts(self.model, head_only=phase == "head", trainable_blocks=t.trainable_blocks)
        if phase != self._phase:
            what = ("the classifier head only" if phase == "head" else
                    "the whole network" if t.trainable_blocks is None else
                    f"the last {t.trainable_blocks} block(s), top conv and head")
            self.say(f"Fine-tuning: training {what} ({counts['trainable_weights']} trainable weights, "
                     f"{counts['frozen_weights']} frozen)")
            self._phase = phase

    def _stop_if_preempted(self, preemption: Optional[PreemptionWatcher]) -> None:
        """At a boundary every worker reaches together: save and stop if any worker got a signal."""
        if preemption is not None and preemption.should_stop():
            raise Preempted(self.global_step, self.checkpoint.save(), preemption.signal_name)

    def train(self, evaluate_during: bool = False, preemption: Optional[PreemptionWatcher] = None) -> Dict[str, Any]:
        """Runs every stage from the current global step to the end of the plan.

        ``evaluate_during``: evaluate after the epochs ``eval.frequency`` names. ``preemption``:
        stop (``Preempted``) with a checkpoint at the step boundary after a termination signal.
        Returns ``{"global_step", "epochs", "train_functions"}``.
        """
        self.preemption = preemption
        try:
            return self._train_stages(evaluate_during, preemption)
        except NonFiniteLossError as error:
            # Read by the next session, which resets the optimizer's moments (_reset_after_divergence).
            self.record({"event": "diverged", "global_step": self.global_step,
                         "checkpoint": self.checkpoint.latest if self.checkpoint else None, "message": str(error)})
            raise

    def _train_stages(self, evaluate_during: bool, preemption: Optional[PreemptionWatcher]) -> Dict[str, Any]:
        plan = self.plan
        epoch, in_epoch = divmod(self.global_step, plan.steps_per_epoch)
        callbacks = self.callbacks(evaluate_during)
        # One progress bar per run: the other workers train silently.
        verbose = plan.config.runtime.verbose if plan.run_dir is None or plan.run_dir.writer else 0
        for stage in plan.stages:
            if stage.end_epoch <= epoch:
                continue
            self._stop_if_preempted(preemption)  # before a new size's compile, which can take long
            set_regularization(self.model, dropout_rate=stage.dropout_rate, drop_connect_rate=stage.drop_connect_rate)
            self.logger.set_stage(stage)
            self.health.train_image_size = stage.image_size
            self.say(schedule_lib.describe(stage, len(plan.stages), self.train_cache.trace_count))
            self.record(dict(stage.to_dict(), event="stage", resumed_at_epoch=epoch,
                             train_functions=self.train_cache.trace_count))
            dataset = self.train_dataset(stage, epoch)
            for phase, end in self._phases(epoch, stage.end_epoch):
                # One program per (size, trainable parts): freezing changes what the step updates.
                key = stage.image_size if phase is None else (stage.image_size, phase)
                with self.train_cache.use(key), _fit_context(plan):
                    if in_epoch:  # finish the interrupted epoch with its remaining steps
                        self.progress_callback.begin_segment(in_epoch)
                        self.model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                                       steps_per_epoch=plan.steps_per_epoch - in_epoch, callbacks=callbacks,
                                       verbose=verbose, shuffle=False)
                        epoch, in_epoch = epoch + 1, 0
                    if epoch < end:
                        self.progress_callback.begin_segment(0)
                        self.model.fit(dataset, initial_epoch=epoch, epochs=end,
                                       steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, verbose=verbose,
                                       shuffle=False)
                        epoch = end
        self._stop_if_preempted(preemption)  # a signal after the last step
        return {"global_step": self.global_step, "epochs": self.global_step // plan.steps_per_epoch,
                "train_functions": self.train_cache.trace_count}
