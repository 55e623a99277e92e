"""The training driver: one resumable run of a progressive schedule, evaluation and export.

``Trainer(config).train()`` builds everything in the strategy's scope, restores the latest
checkpoint in ``model_dir``, recomputes the stage from the restored epoch, and calls
``model.fit`` once per stage (``initial_epoch``/``epochs`` keep epoch numbers global), each at
its image size with that size's one compiled program (``TrainFunctionCache``).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from typing import Any, Dict, List, Optional

import keras
import tensorflow as tf

from effnet_tf.training import config as config_lib
from effnet_tf.training import schedule as schedule_lib
from effnet_tf.training.callbacks import PeriodicEvaluation, ProgressCheckpoint, ProgressiveLogger, append_jsonl
from effnet_tf.training.checkpointing import CheckpointState, Progress, checkpoint_dir
from effnet_tf.training.compile_cache import TestFunctionCache, TrainFunctionCache
from effnet_tf.training.optimizer import (
    apply_weight_decay,
    base_optimizer,
    build_lr_schedule,
    build_optimizer,
    ema_weights,
)
from effnet_tf.training.strategy import create_strategy, is_tpu_strategy, set_precision

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"
CONFIG_FILE = "config.yaml"


def _join(directory: str, *parts: str) -> str:
    if "://" in directory:
        return "/".join([directory.rstrip("/"), *parts])
    return os.path.join(directory, *parts)


def _say(message: str) -> None:
    """User-facing console line (the README's main job prints these)."""
    print(message, flush=True)


def tensorboard_available() -> bool:
    """tf.summary needs the ``tensorboard`` package (TF 2.21 no longer installs it)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _data_module():
    from effnet_tf import data

    return data


def source_kwargs(data_config) -> Dict[str, Any]:
    """The ``effnet_tf.data.get_source`` keyword arguments that apply to ``data.name``'s kind."""
    d = data_config
    kind = d.name.split(":", 1)[0].strip().lower()
    per_kind = {
        "synthetic": dict(num_classes=d.num_classes, train_examples=d.train_examples,
                          validation_examples=d.eval_examples),
        "tfds": dict(data_dir=d.data_dir),
        "tfrecord": dict(train_pattern=d.train_pattern, validation_pattern=d.eval_pattern,
                         num_classes=d.num_classes, label_offset=d.label_offset),
        "folder": {},
    }.get(kind, {})
    return {k: v for k, v in per_kind.items() if v is not None}


def open_source(data_config):
    """The data source of a config: ``data.name`` with ``data.data_dir`` applied.

    For ``tfds:`` sources ``data_dir`` is TFDS' data_dir; for ``tfrecord:`` and ``folder:``
    sources it replaces the directory in the name (``--data_dir=gs://bucket/imagenet``).
    """
    d = data_config
    name = d.name
    kind = name.split(":", 1)[0].strip().lower()
    if kind in ("tfrecord", "folder") and d.data_dir:
        name = f"{kind}:{d.data_dir}"
    return _data_module().get_source(name, **source_kwargs(d))


def _call_with_known_kwargs(function, *args, **kwargs):
    """Calls ``function`` with the keyword arguments it accepts (None values dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    parameters = inspect.signature(function).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    return function(*args, **kwargs)


class Trainer:
    """Runs one experiment. ``config`` is an ``ExperimentConfig`` (nulls are resolved here)."""

    def __init__(self, config: config_lib.ExperimentConfig, strategy: Optional[tf.distribute.Strategy] = None):
        config_lib.validate(config)
        self.strategy = strategy or create_strategy(config.runtime.strategy, config.runtime.tpu)
        self.on_tpu = is_tpu_strategy(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        data = _data_module()
        d = config.data
        self.source = open_source(d)
        self.config = config_lib.resolve(
            config, on_tpu=self.on_tpu, num_classes=getattr(self.source, "num_classes", None),
            train_examples=self.source.num_examples(d.train_split),
        )
        config_lib.validate(self.config, num_replicas=self.num_replicas)
        c = self.config
        self.model_dir = c.runtime.model_dir
        self.steps_per_epoch = c.train.steps_per_epoch
        self.total_steps = c.train.epochs * self.steps_per_epoch

        self.buckets = schedule_lib.training_buckets(c)
        self.schedule_spec = schedule_lib.spec_from_config(c, self.buckets)
        self.stages = schedule_lib.build_schedule(self.schedule_spec, c.runtime.seed)

        set_precision(c.runtime.precision)
        keras.utils.set_random_seed(c.runtime.seed)
        with self.strategy.scope():
            self.model = self._build_model()
            self.weight_decay_kernels = apply_weight_decay(self.model, c.train.weight_decay)
            self.lr_schedule = build_lr_schedule(c.train, self.steps_per_epoch)
            optimizer = build_optimizer(c.train, self.lr_schedule)
            k = min(5, c.model.num_classes)
            self.model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=c.train.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                         keras.metrics.TopKCategoricalAccuracy(k=k, name="top5")],
                steps_per_execution=c.runtime.steps_per_loop,
                jit_compile=bool(c.runtime.jit_compile) and not self.on_tpu,
            )
            # Build every optimizer variable now (slots, EMA, a LossScaleOptimizer's scale): they are
            # then restored eagerly, and the train step never creates variables (which would make
            # tf.function trace it twice).
            self.model.optimizer.build(self.model.trainable_variables)
            self.optimizer = base_optimizer(self.model.optimizer)
            self.progress = Progress(self.steps_per_epoch)
        self.train_cache = TrainFunctionCache(self.model, jit_compile=bool(c.runtime.jit_compile) and not self.on_tpu)
        self.test_cache = TestFunctionCache(self.model)
        self.state = None
        if self.model_dir:
            io_device = "/job:localhost" if self.on_tpu and "://" not in self.model_dir else None
            self.state = CheckpointState(self.model_dir, self.model, self.model.optimizer, self.progress,
                                         max_to_keep=c.runtime.keep_checkpoints, io_device=io_device)
        self.results: Dict[str, Any] = {}

    # -----------------------------------------------------------------------------------------
    # Building

    def _build_model(self) -> keras.Model:
        import effnet_tf

        m = self.config.model
        model = effnet_tf.build_model(
            **config_lib.model_build_kwargs(m), batchnorm_synchronized=m.sync_batch_norm or None)
        if m.weights:
            self._load_initial_weights(model, m.weights)
        return model

    def _load_initial_weights(self, model: keras.Model, weights: str) -> None:
        import effnet_tf

        if weights == "imagenet":
            spec = model.variant
            if spec is None or not spec.keras_application:
                raise ValueError(f"model.weights='imagenet' needs a variant with keras.applications weights; "
                                 f"{self.config.model.name!r} has none.")
            constructor = getattr(keras.applications, spec.keras_application)
            source = constructor(weights="imagenet", include_top=False)
        else:
            source = weights
        counts = effnet_tf.load_keras_applications_weights(model, source, skip_mismatched_head=True)
        _say(f"Initial weights from {weights}: {counts}")

    def train_dataset(self, stage: schedule_lib.Stage, start_epoch: int):
        """The distributed training dataset of ``stage`` (repeats forever)."""
        data, c = _data_module(), self.config
        seed = (c.runtime.seed * 1_000_003 + start_epoch) % (2**31 - 1)

        def dataset_fn(input_context):
            ds = _call_with_known_kwargs(
                data.build_dataset, self.source, split=c.data.train_split, image_size=stage.image_size,
                global_batch_size=c.train.global_batch_size, training=True,
                randaug_magnitude=stage.randaug_magnitude, randaug_layers=c.data.randaug_layers,
                mixup_alpha=stage.mixup_alpha, cutmix_alpha=stage.cutmix_alpha,
                crop_area_min=c.data.crop_area_min, seed=seed, input_context=input_context,
                buckets=self.buckets, drop_remainder=True, shuffle_buffer=c.data.shuffle_buffer,
                cache=c.data.cache, skip_corrupt=c.data.skip_corrupt,
            )
            return ds.repeat()

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def eval_dataset(self):
        """The distributed evaluation dataset at the eval size."""
        data, c = _data_module(), self.config

        def dataset_fn(input_context):
            return _call_with_known_kwargs(
                data.build_dataset, self.source, split=c.data.eval_split, image_size=c.eval.image_size,
                global_batch_size=c.eval.batch_size, training=False, input_context=input_context,
                drop_remainder=c.eval.drop_remainder, cache=c.data.cache, skip_corrupt=c.data.skip_corrupt,
            )

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -----------------------------------------------------------------------------------------
    # Evaluation and export

    def evaluate(self, verbose: int = 0) -> Dict[str, float]:
        """top-1/top-5/loss on the eval split at the eval size, with the EMA weights if configured."""
        c = self.config
        with ema_weights(self.model, enabled=c.eval.use_ema) as used_ema:
            results = self.test_cache.evaluate(c.eval.image_size, self.eval_dataset(), steps=c.eval.steps,
                                               verbose=verbose)
        results = {k: float(v) for k, v in results.items()}
        results["ema"] = float(used_ema)
        return results

    def export(self, overwrite: bool = True) -> Optional[str]:
        """Writes ``export.formats`` with the EMA weights to ``export.dir`` (atomically).

        The end-of-training export replaces an earlier one; ``--mode=export`` passes
        ``export.overwrite``.
        """
        c = self.config
        if not c.export.dir:
            return None
        from effnet_tf.export import export_all

        options = tf.saved_model.SaveOptions(experimental_io_device="/job:localhost") if self.on_tpu else None
        with ema_weights(self.model, enabled=c.export.use_ema):
            return export_all(
                self.model, c.export.dir, formats=tuple(c.export.formats), image_size=c.eval.image_size,
                class_names=getattr(self.source, "class_names", None), overwrite=overwrite, options=options,
                metadata={"checkpoint": self.state.latest if self.state else None,
                          "model": c.model.name, "ema": bool(c.export.use_ema)},
            )

    # -----------------------------------------------------------------------------------------
    # Training

    def _record(self, record: dict) -> None:
        if self.model_dir:
            append_jsonl(_join(self.model_dir, PROGRESS_FILE), dict(record, time=round(time.time(), 3)))

    def _learning_rate(self) -> float:
        return float(self.lr_schedule(self.optimizer.iterations))

    def _restore(self) -> Optional[str]:
        path = self.state.restore()
        saved_spe = int(self.progress.steps_per_epoch.numpy())
        if path and saved_spe != self.steps_per_epoch:
            raise ValueError(
                f"The checkpoint {path} was written with {saved_spe} steps per epoch, this config has "
                f"{self.steps_per_epoch} (train.global_batch_size / train.steps_per_epoch changed). Use a new "
                "--model_dir or the original settings."
            )
        return path

    def write_config(self) -> str:
        path = _join(self.model_dir, CONFIG_FILE)
        config_lib.save_yaml(self.config, path)
        return path

    def _should_evaluate(self, epoch: int) -> bool:
        frequency = self.config.eval.frequency
        if frequency == "epoch":
            return True
        if frequency == "stage":
            return any(stage.end_epoch == epoch + 1 for stage in self.stages)
        return epoch + 1 == self.config.train.epochs

    def _callbacks(self, evaluate_during: bool) -> List[keras.callbacks.Callback]:
        c = self.config
        use_tensorboard = c.runtime.tensorboard and tensorboard_available()
        if c.runtime.tensorboard and not use_tensorboard:
            _say("TensorBoard logs disabled: the `tensorboard` package is not installed (pip install tensorboard).")
        self.progress_callback = ProgressCheckpoint(self.state, self.steps_per_epoch, c.runtime.checkpoint_every_steps)
        self.logger = ProgressiveLogger(
            _join(self.model_dir, "logs", "progressive") if use_tensorboard else None,
            c.train.global_batch_size, lambda: self.train_cache.trace_count, self._learning_rate,
            self._record,
        )
        callbacks: List[keras.callbacks.Callback] = [self.progress_callback]
        if evaluate_during:
            self.evaluation_callback = PeriodicEvaluation(self.evaluate, self._should_evaluate)
            callbacks.append(self.evaluation_callback)
        callbacks.append(self.logger)
        if use_tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(_join(self.model_dir, "logs"), write_graph=False,
                                                         update_freq="epoch", profile_batch=0))
        return callbacks

    def train(self, evaluate: Optional[bool] = None) -> Dict[str, Any]:
        """Trains (resuming from the latest checkpoint), then evaluates and exports as configured.

        Returns a summary dict (final eval metrics, paths, epochs, compile count).
        """
        c = self.config
        if not self.model_dir:
            raise ValueError("runtime.model_dir (--model_dir) is required for training.")
        evaluate = c.runtime.mode == "train_and_eval" if evaluate is None else evaluate
        tf.io.gfile.makedirs(self.model_dir)
        restored = self._restore()
        start_step = self.progress.global_step
        epoch, in_epoch = divmod(start_step, self.steps_per_epoch)
        if start_step >= self.total_steps:
            return self._already_complete(evaluate)

        config_path = self.write_config()
        current = schedule_lib.stage_at_epoch(self.schedule_spec, c.runtime.seed, epoch)
        _say(f"effnet_tf: {c.model.name or 'custom blocks'} on {c.data.name} | {self.num_replicas} replica(s) "
             f"({type(self.strategy).__name__}) | precision {c.runtime.precision} | global batch "
             f"{c.train.global_batch_size} | {c.train.epochs} epochs x {self.steps_per_epoch} steps | progressive "
             f"{c.progressive.mode} ({len(self.stages)} stage(s), sizes {schedule_lib.distinct_sizes(self.stages)})")
        _say(f"Config written to {config_path}")
        if restored:
            _say(f"Resuming from {restored}: global step {start_step}, epoch {epoch + 1} (step {in_epoch} of it), "
                 f"stage {current.index + 1}/{len(self.stages)}")
        self._record({"event": "run_start", "resumed_from": restored, "global_step": start_step,
                      "epoch": epoch, "step_in_epoch": in_epoch, "stage": current.index,
                      "total_epochs": c.train.epochs, "steps_per_epoch": self.steps_per_epoch})

        from effnet_tf.model.regularization import set_regularization

        callbacks = self._callbacks(evaluate and c.eval.frequency != "end")
        verbose = c.runtime.verbose
        for stage in self.stages:
            if stage.end_epoch <= epoch:
                continue
            set_regularization(self.model, dropout_rate=stage.dropout_rate, drop_connect_rate=stage.drop_connect_rate)
            self.logger.set_stage(stage)
            _say(schedule_lib.describe(stage, len(self.stages), self.train_cache.trace_count))
            self._record(dict(stage.to_dict(), event="stage", resumed_at_epoch=epoch,
                              train_functions=self.train_cache.trace_count))
            dataset = self.train_dataset(stage, epoch)
            with self.train_cache.use(stage.image_size):
                if in_epoch:
                    # Finish the interrupted epoch with its remaining steps.
                    self.progress_callback.begin_segment(in_epoch)
                    self.model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                                   steps_per_epoch=self.steps_per_epoch - in_epoch, callbacks=callbacks,
                                   verbose=verbose, shuffle=False)
                    epoch, in_epoch = epoch + 1, 0
                if epoch < stage.end_epoch:
                    self.progress_callback.begin_segment(0)
                    self.model.fit(dataset, initial_epoch=epoch, epochs=stage.end_epoch,
                                   steps_per_epoch=self.steps_per_epoch, callbacks=callbacks, verbose=verbose,
                                   shuffle=False)
                    epoch = stage.end_epoch
        return self._finish(evaluate)

    def _finish(self, evaluate: bool, already_complete: bool = False) -> Dict[str, Any]:
        c = self.config
        results: Dict[str, Any] = {
            "epochs": self.progress.global_step // self.steps_per_epoch,
            "global_step": self.progress.global_step,
            "train_functions": self.train_cache.trace_count,
            "checkpoint": self.state.latest,
            "tensorboard": _join(self.model_dir, "logs"),
            "already_complete": already_complete,
        }
        if evaluate:
            previous = getattr(getattr(self, "evaluation_callback", None), "last", None)
            last_epoch_evaluated = previous is not None and self._should_evaluate(c.train.epochs - 1)
            results["eval"] = previous if (last_epoch_evaluated and not already_complete) else self.evaluate()
        export_dir = c.export.dir
        if c.export.enabled and export_dir:
            if already_complete and tf.io.gfile.exists(_join(export_dir, "saved_model", "saved_model.pb")):
                results["saved_model"] = export_dir
            else:
                results["saved_model"] = self.export()
        self._record(dict(event="run_end", **{k: v for k, v in results.items() if k != "eval"},
                          **{f"eval_{k}": v for k, v in (results.get("eval") or {}).items()}))
        self.results = results
        self._print_summary(results)
        return results

    def _already_complete(self, evaluate: bool) -> Dict[str, Any]:
        _say(f"Training already complete in {self.model_dir}: global step {self.progress.global_step} of "
             f"{self.total_steps} ({self.config.train.epochs} epochs). Nothing to train.")
        return self._finish(evaluate, already_complete=True)

    def _print_summary(self, results: Dict[str, Any]) -> None:
        c = self.config
        lines = ["", f"Done: {results['epochs']} epochs, {results['global_step']} steps, "
                     f"{results['train_functions']} compiled train function(s) this session."]
        if "eval" in results:
            e = results["eval"]
            weights = "EMA weights" if e.get("ema") else "trained weights"
            top5 = f"top-5 {e.get('top5', float('nan')):.4f}, " if c.model.num_classes > 5 else ""
            lines.append(f"Eval accuracy ({c.data.eval_split}, {c.eval.image_size} px, {weights}): "
                         f"top-1 {e.get('top1', float('nan')):.4f}, {top5}loss {e.get('loss', float('nan')):.4f}")
        lines.append(f"Checkpoint:  {results['checkpoint']}")
        lines.append(f"TensorBoard: tensorboard --logdir {results['tensorboard']}")
        if results.get("saved_model"):
            lines.append(f"SavedModel:  {_join(results['saved_model'], 'saved_model')}  (and .keras/TFLite beside it)")
        _say("\n".join(lines))

    # -----------------------------------------------------------------------------------------
    # Other modes

    def run_eval(self, checkpoint: Optional[str] = None) -> Dict[str, float]:
        """``--mode=eval``: restores ``checkpoint`` (default: eval.checkpoint or the latest) and evaluates."""
        path = checkpoint or self.config.eval.checkpoint or (self.state.latest if self.state else None)
        if not path:
            where = checkpoint_dir(self.model_dir) if self.model_dir else "(no --model_dir)"
            raise FileNotFoundError(f"--mode=eval: no checkpoint found in {where}; pass eval.checkpoint or train first.")
        self.state.restore(path) if self.state else tf.train.Checkpoint(
            model=self.model, optimizer=self.model.optimizer).restore(path).expect_partial()
        results = self.evaluate(verbose=self.config.runtime.verbose)
        results["checkpoint"] = path
        _say(f"Eval of {path} ({self.config.data.eval_split}, {self.config.eval.image_size} px, "
             f"{'EMA' if results['ema'] else 'trained'} weights): top-1 {results['top1']:.4f}, "
             f"top-5 {results['top5']:.4f}, loss {results['loss']:.4f}")
        if self.model_dir:
            self._record(dict(event="eval", **results))
        self.results = results
        return results

    def run_export(self) -> str:
        """``--mode=export``: restores the latest checkpoint and writes the SavedModel."""
        path = self.state.latest if self.state else None
        if not path:
            raise FileNotFoundError(f"--mode=export: no checkpoint in {checkpoint_dir(self.model_dir or '.')}.")
        self.state.restore(path)
        out = self.export(overwrite=self.config.export.overwrite)
        _say(f"Exported {path} ({', '.join(self.config.export.formats)}): {out}")
        return out

    def run(self) -> Dict[str, Any]:
        """Runs ``runtime.mode``."""
        mode = self.config.runtime.mode
        if mode == "train":
            return self.train(evaluate=False)
        if mode == "train_and_eval":
            return self.train(evaluate=True)
        if mode == "eval":
            return self.run_eval()
        if mode == "export":
            return {"saved_model": self.run_export()}
        raise ValueError(f"runtime.mode={mode!r} is not one of {config_lib.MODES}.")
