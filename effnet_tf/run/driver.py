"""The driver of one experiment: strategy first, then source, plan, components and loop; the mode
dispatch (train / train_and_eval / eval / export), the end-of-run evaluation and export, and
what the console and ``progress.jsonl`` say about the run as a whole.

    Driver(config).run()

Everything below this module (``training``, ``export``) is usable on its own; this is where a
run directory, a training loop and an export meet.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from effnet_tf.config.schema import MODES, ExperimentConfig
from effnet_tf.data.from_config import open_source
from effnet_tf.export.atomic import ExportCancelled, remove_leftovers
from effnet_tf.export.bundle import SAVED_MODEL_DIR, export_all
from effnet_tf.run.failures import op_error_text
from effnet_tf.run.restore import export_calibration
from effnet_tf.storage import paths
from effnet_tf.storage.run_lock import RunLock
from effnet_tf.training.health import plan_warnings
from effnet_tf.training.loop import CheckpointMismatchError, TrainingLoop
from effnet_tf.training.optimizer import ema_weights
from effnet_tf.training.plan import Plan, make_plan
from effnet_tf.training.preemption import Interrupted, Preempted, PreemptionWatcher
from effnet_tf.training.strategy import create_strategy, is_tpu_strategy, worker_role
from effnet_tf.training.task import build_components


def say(message: str) -> None:
    """A user-facing console line."""
    print(message, flush=True)


class Driver:
    """One experiment: ``Driver(config).run()`` runs ``runtime.mode`` of ``config``.

    ``strategy`` defaults to ``runtime.strategy`` (created before anything else touches
    TensorFlow); ``say`` prints user-facing lines.
    """

    def __init__(self, config: ExperimentConfig, strategy: Optional[tf.distribute.Strategy] = None,
                 say: Callable[[str], None] = say):
        # The strategy comes first: MultiWorkerMirroredStrategy must configure its collectives
        # before anything else initialises TensorFlow.
        self.strategy = strategy or create_strategy(config.runtime.strategy, config.runtime.tpu)
        self.role = worker_role(self.strategy)
        # The run's console is the chief's; other workers print only their own worker lines.
        self.say = say if self.role.is_chief else (lambda message: None)
        self.say_as_worker = say
        self.source = open_source(config.data)
        for split in (config.data.train_split, config.data.eval_split):  # now, not after hours of training
            self.source.check_split(split)
        for line in getattr(self.source, "scan_report", list)():  # what a folder source used and ignored
            self.say(line)
        self.plan: Plan = make_plan(
            config, num_classes=getattr(self.source, "num_classes", None),
            train_examples=self.source.num_examples(config.data.train_split),
            num_replicas=self.strategy.num_replicas_in_sync, on_tpu=is_tpu_strategy(self.strategy),
            writer=self.role.is_chief, worker_id=self.role.worker_id,
        )
        components = build_components(self.plan, self.strategy)
        if components.initial_weights is not None:
            self.say(f"Initial weights from {self.plan.config.model.weights}: {components.initial_weights}")
        self.loop = TrainingLoop(self.plan, self.strategy, self.source, components, say=self.say)

    @property
    def config(self) -> ExperimentConfig:
        return self.plan.config

    @property
    def model(self):
        return self.loop.model

    def _record(self, record: dict) -> None:
        self.loop.record(record)

    # -----------------------------------------------------------------------------------------
    # Modes

    def run(self) -> Dict[str, Any]:
        """Runs ``runtime.mode``."""
        mode = self.config.runtime.mode
        if mode == "train":
            return self.train(evaluate=False)
        if mode == "train_and_eval":
            return self.train(evaluate=True)
        if mode == "eval":
            return self.evaluate_checkpoint()
        if mode == "export":
            return {"saved_model": self.export_checkpoint()}
        raise ValueError(f"runtime.mode={mode!r} is not one of {MODES}.")

    def train(self, evaluate: Optional[bool] = None) -> Dict[str, Any]:
        """Trains (resuming from the latest checkpoint), then evaluates and exports as configured.

        Returns a summary dict (final eval metrics, paths, epochs, compile count).
        """
        c = self.config
        if self.plan.run_dir is None:
            raise ValueError("runtime.model_dir (--model_dir) is required for training.")
        evaluate = c.runtime.mode == "train_and_eval" if evaluate is None else evaluate
        self.plan.run_dir.create()
        # The writer locks the run directory before it writes anything (one trainer per model_dir).
        lock = RunLock(self.plan.run_dir.root, say=self.say) if self.plan.run_dir.writer else nullcontext()
        with lock, PreemptionWatcher(self.strategy, self.role, say=self.say_as_worker) as preemption:
            return self._train(evaluate, preemption)

    def _train(self, evaluate: bool, preemption: PreemptionWatcher) -> Dict[str, Any]:
        plan, c, run_dir = self.plan, self.config, self.plan.run_dir
        self._check_checkpoints_fit()
        for stale in self.loop.checkpoint.remove_stale_temporaries():
            self.say(f"Removed {stale}: a checkpoint save that a killed process left unfinished.")
        restored = self.loop.restore()
        start_step = self.loop.global_step
        if start_step >= plan.total_steps:
            self.say(f"Training already complete in {run_dir.root}: global step {start_step} of "
                     f"{plan.total_steps} ({plan.epochs} epochs). Nothing to train.")
            return self._finish(evaluate, preemption, already_complete=True)

        from effnet_tf.config.io import to_yaml

        config_path = run_dir.write_config(to_yaml(c))
        epoch, in_epoch = divmod(start_step, plan.steps_per_epoch)
        current = plan.stage_at_epoch(epoch)
        self.say(f"effnet_tf: {c.model.name or 'custom blocks'} on {c.data.name} | {plan.num_replicas} replica(s) "
                 f"({type(self.strategy).__name__}) | precision {c.runtime.precision} | global batch "
                 f"{c.train.global_batch_size} | {plan.epochs} epochs x {plan.steps_per_epoch} steps | progressive "
                 f"{c.progressive.mode} ({len(plan.stages)} stage(s), sizes {plan.sizes})")
        for note in plan.recipe_notes:
            self.say(note)
        for warning in plan_warnings(plan):
            self.say(f"effnet-train: warning: {warning['message']}")
            self._record(dict(event="health", **warning))
        if config_path:
            self.say(f"Config written to {config_path}")
        if restored:
            self.say(f"Resuming from {restored}: global step {start_step}, epoch {epoch + 1} (step {in_epoch} of it), "
                     f"stage {current.index + 1}/{len(plan.stages)}")
        if self.role.multi_worker:
            self.say_as_worker(
                f"worker {self.role.worker_id}/{self.role.num_workers}"
                f"{' (chief: writes config, logs, progress and export)' if self.role.is_chief else ''}: "
                f"{plan.num_replicas // self.role.num_workers} replica(s) here, "
                f"{c.train.global_batch_size // plan.num_replicas} images per replica per step")
        self._record({"event": "run_start", "resumed_from": restored, "global_step": start_step,
                      "epoch": epoch, "step_in_epoch": in_epoch, "stage": current.index,
                      "total_epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch,
                      "workers": self.role.num_workers, "replicas": plan.num_replicas})
        try:
            during = bool(c.eval.every_epochs) or c.eval.frequency != "end"
            self.loop.train(evaluate_during=evaluate and during, preemption=preemption)
        except tf.errors.OpError as error:
            self._name_unreadable_shard(error)
            raise
        return self._finish(evaluate, preemption)

    def _name_unreadable_shard(self, error: tf.errors.OpError) -> None:
        """A read error inside the pipeline does not say which file: find it, when that is cheap."""
        text = op_error_text(error)
        if "unreadable record in" not in text or not hasattr(self.source, "find_unreadable"):
            return
        culprit = self.source.find_unreadable(self.config.data.train_split)
        if culprit:
            raise ValueError(f"data: unreadable record in {culprit} (a damaged or non-TFRecord shard: "
                             "replace it, or remove it from the split's pattern).") from error

    def _check_checkpoints_fit(self) -> None:
        """Refuses, before anything is restored, checkpoints that the run's own config.yaml says
        belong to another model (so the message names what changed, not a tensor shape)."""
        run_dir = self.plan.run_dir
        if run_dir is None or not paths.exists(run_dir.config_file) or run_dir.latest_checkpoint() is None:
            return
        from effnet_tf.config.compare import differences
        from effnet_tf.config.io import load_yaml_files

        changes = differences(load_yaml_files([run_dir.config_file]), self.config)
        if changes:
            raise CheckpointMismatchError(
                f"model_dir {run_dir.root} holds checkpoints of another model ({'; '.join(changes)}, from its "
                "config.yaml to this run): use a new --model_dir, or the original settings.")

    def _finish(self, evaluate: bool, preemption: PreemptionWatcher,
                already_complete: bool = False) -> Dict[str, Any]:
        plan, c, loop = self.plan, self.config, self.loop
        results: Dict[str, Any] = {
            "epochs": loop.global_step // plan.steps_per_epoch,
            "global_step": loop.global_step,
            "train_functions": loop.train_cache.trace_count,
            "checkpoint": loop.checkpoint.latest,
            "tensorboard": plan.run_dir.logs,
            "already_complete": already_complete,
        }
        if evaluate:
            # The last epoch's evaluation during training is the final one; else evaluate now.
            evaluated_last = loop.last_eval is not None and plan.should_evaluate(plan.epochs - 1)
            results["eval"] = loop.last_eval if (evaluated_last and not already_complete) else loop.evaluate()
        if c.export.enabled and plan.export_dir:
            finished = paths.exists(paths.join(plan.export_dir, SAVED_MODEL_DIR, "saved_model.pb"))
            results["saved_model"] = (plan.export_dir if (already_complete and finished)
                                      else self._export_unless_preempted(preemption))
        self._record(dict(event="run_end", **{k: v for k, v in results.items() if k != "eval"},
                          **{f"eval_{k}": v for k, v in (results.get("eval") or {}).items()}))
        self._print_summary(results)
        if self.role.multi_worker:
            # Replicas in sync hold identical weights: the same fingerprint on every worker.
            pipelines = ", ".join(f"{i} of {n}" for i, n in sorted(self.loop.input_pipelines)) or "none this session"
            self.say_as_worker(f"worker {self.role.worker_id}/{self.role.num_workers}: read input pipeline "
                               f"{pipelines}; weights fingerprint {weights_fingerprint(self.model)}")
        return results

    def _print_summary(self, results: Dict[str, Any]) -> None:
        c = self.config
        lines = ["", f"Done: {results['epochs']} epochs, {results['global_step']} steps, "
                     f"{results['train_functions']} compiled train function(s) this session."]
        if "eval" in results:
            e = results["eval"]
            weights = "EMA weights" if e.get("ema") else "trained weights"
            top5 = f"top-5 {e.get('top5', float('nan')):.4f}, " if c.model.num_classes > 5 else ""
            lines.append(f"Eval accuracy ({c.data.eval_split}, {self.plan.eval_size} px, {weights}): "
                         f"top-1 {e.get('top1', float('nan')):.4f}, {top5}loss {e.get('loss', float('nan')):.4f}")
        lines.append(f"Checkpoint:  {results['checkpoint']}")
        lines.append(f"TensorBoard: tensorboard --logdir {results['tensorboard']}")
        if results.get("saved_model"):
            lines.append(f"SavedModel:  {paths.join(results['saved_model'], SAVED_MODEL_DIR)}  "
                         "(and .keras/TFLite beside it)")
        self.say("\n".join(lines))

    def _export_unless_preempted(self, preemption: PreemptionWatcher) -> Optional[str]:
        """The end-of-run export, abandoned within a poll interval when a termination signal
        arrives (a 30-s preemption notice is shorter than a large model's export): nothing lands
        at the target, the run ends preempted, and the same command exports without training."""
        def preempted() -> Preempted:
            return Preempted(self.loop.global_step, self.loop.checkpoint.latest, preemption.signal_name, message=(
                f"{preemption.signal_name} during the export: abandoned it, nothing was written to "
                f"{self.plan.export_dir}. Training is complete (global step {self.loop.global_step}, checkpoint "
                f"{self.loop.checkpoint.latest}): run the same command again to export without training."))

        if preemption.requested:  # during the final evaluation
            raise preempted()
        preemption.exporting = True
        try:
            return preemption.run_unless_signalled(lambda: self.export(cancel=preemption.event), "export")
        except (Interrupted, ExportCancelled):
            if self.role.is_chief:  # the abandoned thread's temporary directory (the process ends now)
                remove_leftovers(self.plan.export_dir)
            raise preempted() from None
        finally:
            preemption.exporting = False

    def export(self, overwrite: bool = True, cancel=None) -> Optional[str]:
        """Writes ``export.formats`` of the current (EMA, if configured) weights to ``export.dir``
        at the plan's eval size, atomically. The end-of-training export replaces an earlier one;
        ``--mode=export`` passes ``export.overwrite``; ``cancel`` as ``export_all``."""
        plan, c = self.plan, self.config
        if not plan.export_dir:
            return None
        options = tf.saved_model.SaveOptions(experimental_io_device="/job:localhost") if plan.on_tpu else None
        checkpoint = self.loop.checkpoint.latest if self.loop.checkpoint else None
        # Every worker exports (reading replicated weights can be a collective), but only the
        # chief's export is kept: the others write to a temporary directory and delete it.
        target = plan.export_dir if self.role.is_chief else tempfile.mkdtemp(prefix="effnet_export_worker_")
        calibration = export_calibration(c, c.export.formats, plan.eval_size, self.source)
        self.say(f"Exporting {', '.join(c.export.formats)} ({plan.eval_size} px) to {plan.export_dir} ...")
        try:
            with ema_weights(self.model, enabled=c.export.use_ema):
                export_all(
                    self.model, target if self.role.is_chief else paths.join(target, "export"),
                    formats=tuple(c.export.formats), image_size=plan.eval_size,
                    class_names=getattr(self.source, "class_names", None), overwrite=overwrite, options=options,
                    metadata={"checkpoint": checkpoint, "model": c.model.name, "ema": bool(c.export.use_ema)},
                    calibration_images=calibration, crop_fraction=c.data.eval_crop_fraction, cancel=cancel,
                )
        finally:
            if not self.role.is_chief:
                paths.remove(target)
        return plan.export_dir

    def evaluate_checkpoint(self, checkpoint: Optional[str] = None) -> Dict[str, float]:
        """``--mode=eval``: restores ``checkpoint`` (default: eval.checkpoint or the latest) and evaluates."""
        c, loop = self.config, self.loop
        explicit = checkpoint or c.eval.checkpoint
        path = explicit or (loop.checkpoint.latest if loop.checkpoint else None)
        if not path:
            where = self.plan.run_dir.checkpoints if self.plan.run_dir else "(no --model_dir)"
            raise FileNotFoundError(f"--mode=eval: no checkpoint found in {where}; pass eval.checkpoint or train first.")
        if explicit and not paths.exists(explicit + ".index"):
            raise FileNotFoundError(f"eval.checkpoint {explicit!r} does not exist (no {explicit}.index): pass a "
                                    "checkpoint prefix such as <model_dir>/checkpoints/ckpt-<step>.")
        if not explicit:
            self._check_checkpoints_fit()
        path = loop.restore(path if explicit else None)
        results = loop.evaluate(verbose=c.runtime.verbose)
        results["checkpoint"] = path
        self.say(f"Eval of {path} ({c.data.eval_split}, {self.plan.eval_size} px, "
                 f"{'EMA' if results['ema'] else 'trained'} weights): top-1 {results['top1']:.4f}, "
                 f"top-5 {results['top5']:.4f}, loss {results['loss']:.4f}")
        self._record(dict(event="eval", **results))
        return results

    def export_checkpoint(self) -> str:
        """``--mode=export``: restores the latest checkpoint and writes the export."""
        loop = self.loop
        path = loop.checkpoint.latest if loop.checkpoint else None
        if not path:
            where = self.plan.run_dir.checkpoints if self.plan.run_dir else "(no --model_dir)"
            raise FileNotFoundError(f"--mode=export: no checkpoint in {where}.")
        self._check_checkpoints_fit()
        path = loop.restore()
        out = self.export(overwrite=self.config.export.overwrite)
        self.say(f"Exported {path} ({', '.join(self.config.export.formats)}): {out}")
        return out



def weights_fingerprint(model) -> str:
    """A short digest of every weight's bytes (equal on workers whose replicas are in sync)."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]
