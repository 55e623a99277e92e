"""The driver of one experiment: strategy first, then source, plan, components and loop; the mode
dispatch (train / train_and_eval / eval / export), the run lock, and the end-of-run evaluation
and export. What it prints is worded in ``run/console.py``; the export is ``export_trained``
(``run/export_run.py``), the same function ``--mode=export`` uses.

    Driver(config).run()

Everything below this module (``training``, ``export``) is usable on its own; this is where a
run directory, a training loop and an export meet. ``--mode=export`` does not need a driver
(``run.restore.export_run_directory``: no strategy, no training data); ``--mode=eval`` checks only
the eval split.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from effnet_tf.config.schema import MODES, ExperimentConfig
from effnet_tf.data.from_config import open_source
from effnet_tf.export.atomic import ExportCancelled, remove_leftovers
from effnet_tf.export.layout import SAVED_MODEL_DIR
from effnet_tf.run import console
from effnet_tf.run.failures import op_error_text
from effnet_tf.run.export_run import export_trained
from effnet_tf.run.restore import check_checkpoints_fit, export_run_directory
from effnet_tf.storage import paths
from effnet_tf.storage.run_lock import RunLock
from effnet_tf.training.health import plan_warnings
from effnet_tf.training.loop import TrainingLoop
from effnet_tf.training.plan import Plan, make_plan
from effnet_tf.training.preemption import Interrupted, Preempted, PreemptionWatcher
from effnet_tf.training.strategy import create_strategy, is_tpu_strategy, worker_role
from effnet_tf.training.task import build_components


class Driver:
    """One experiment: ``Driver(config).run()`` runs ``runtime.mode`` of ``config``.

    ``strategy`` defaults to ``runtime.strategy`` (created before anything else touches
    TensorFlow); ``say`` prints user-facing lines.
    """

    def __init__(self, config: ExperimentConfig, strategy: Optional[tf.distribute.Strategy] = None,
                 say: Callable[[str], None] = console.say):
        # The strategy comes first: MultiWorkerMirroredStrategy must configure its collectives
        # before anything else initialises TensorFlow.
        self.strategy = strategy or create_strategy(config.runtime.strategy, config.runtime.tpu)
        self.role = worker_role(self.strategy)
        # The run's console is the chief's; other workers print only their own worker lines.
        self.say = say if self.role.is_chief else (lambda message: None)
        self.say_as_worker = say
        self.source = open_source(config.data)
        # The splits this mode reads, checked now (not after hours of training).
        splits = (config.data.eval_split,) if config.runtime.mode == "eval" else (
            config.data.train_split, config.data.eval_split)
        for split in splits:
            self.source.check_split(split)
        train_split = config.data.train_split
        train_examples = self.source.num_examples(train_split) if train_split in self.source.splits else None
        for line in getattr(self.source, "scan_report", list)():  # what a folder source used and ignored
            self.say(line)
        self.plan: Plan = make_plan(
            config, num_classes=getattr(self.source, "num_classes", None),
            train_examples=train_examples,
            num_replicas=self.strategy.num_replicas_in_sync, on_tpu=is_tpu_strategy(self.strategy),
            writer=self.role.is_chief, worker_id=self.role.worker_id,
        )
        components = build_components(self.plan, self.strategy)
        if components.initial_weights is not None:
            self.say(console.initial_weights(self.plan.config.model.weights, components.initial_weights))
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
            return {"saved_model": export_run_directory(self.config, say=self.say)}
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
            self.say(console.stale_checkpoint_removed(stale))
        restored = self.loop.restore()
        start_step = self.loop.global_step
        if start_step >= plan.total_steps:
            self.say(console.already_complete(plan, start_step))
            return self._finish(evaluate, preemption, already_complete=True)

        from effnet_tf.config.io import to_yaml

        config_path = run_dir.write_config(to_yaml(c))
        epoch, in_epoch = divmod(start_step, plan.steps_per_epoch)
        current = plan.stage_at_epoch(epoch)
        self.say(console.run_header(plan, type(self.strategy).__name__))
        for note in plan.recipe_notes:
            self.say(note)
        for warning in plan_warnings(plan):
            self.say(console.warning(warning["message"]))
            self._record(dict(event="health", **warning))
        if config_path:
            self.say(console.config_written(config_path))
        if restored:
            self.say(console.resuming(restored, start_step, plan))
        if self.role.multi_worker:
            self.say_as_worker(console.worker_start(self.role, plan))
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
        check_checkpoints_fit(self.plan.run_dir, self.config)

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
        self.say(console.summary(results, plan))
        if self.role.multi_worker:
            # Replicas in sync hold identical weights: the same fingerprint on every worker.
            self.say_as_worker(console.worker_end(self.role, self.loop.input_pipelines,
                                                  weights_fingerprint(self.model)))
        return results

    def _export_unless_preempted(self, preemption: PreemptionWatcher) -> Optional[str]:
        """The end-of-run export, abandoned within a poll interval when a termination signal
        arrives (a 30-s preemption notice is shorter than a large model's export): nothing lands
        at the target, the run ends preempted, and the same command exports without training."""
        def preempted() -> Preempted:
            return Preempted(self.loop.global_step, self.loop.checkpoint.latest, preemption.signal_name,
                             message=console.export_abandoned(preemption.signal_name, self.plan.export_dir,
                                                              self.loop.global_step, self.loop.checkpoint.latest))

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
        """The end-of-training export (``export_trained``) of the current weights; it replaces an
        earlier export. ``cancel`` as ``export_all``."""
        checkpoint = self.loop.checkpoint.latest if self.loop.checkpoint else None
        return export_trained(self.model, self.plan, checkpoint=checkpoint, global_step=self.loop.global_step,
                              source=self.source, overwrite=overwrite, chief=self.role.is_chief, cancel=cancel,
                              say=self.say)

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
        self.say(console.evaluation(path, results, self.plan))
        self._record(dict(event="eval", **results))
        return results


def weights_fingerprint(model) -> str:
    """A short digest of every weight's bytes (equal on workers whose replicas are in sync)."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]
