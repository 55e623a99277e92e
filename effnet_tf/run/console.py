"""What ``effnet-train`` prints about a run as a whole: the header, the resume line, a worker's
lines, the summary, an evaluation. Pure functions from the plan and results to text, so the
wording lives in one place (docs/troubleshooting.md quotes it) and the driver only decides when.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from effnet_tf.export.layout import SAVED_MODEL_DIR
from effnet_tf.storage import paths


def say(message: str) -> None:
    """A user-facing console line."""
    print(message, flush=True)


def run_header(plan, strategy_name: str) -> str:
    c = plan.config
    return (f"effnet_tf: {c.model.name or 'custom blocks'} on {c.data.name} | {plan.num_replicas} replica(s) "
            f"({strategy_name}) | precision {c.runtime.precision} | global batch {c.train.global_batch_size} | "
            f"{plan.epochs} epochs x {plan.steps_per_epoch} steps | progressive {c.progressive.mode} "
            f"({len(plan.stages)} stage(s), sizes {plan.sizes})")


def initial_weights(source: str, counts) -> str:
    return f"Initial weights from {source}: {counts}"


def config_written(path: str) -> str:
    return f"Config written to {path}"


def already_complete(plan, global_step: int) -> str:
    return (f"Training already complete in {plan.run_dir.root}: global step {global_step} of "
            f"{plan.total_steps} ({plan.epochs} epochs). Nothing to train.")


def resuming(checkpoint: str, global_step: int, plan) -> str:
    epoch, in_epoch = divmod(global_step, plan.steps_per_epoch)
    stage = plan.stage_at_epoch(epoch)
    return (f"Resuming from {checkpoint}: global step {global_step}, epoch {epoch + 1} (step {in_epoch} of it), "
            f"stage {stage.index + 1}/{len(plan.stages)}")


def stale_checkpoint_removed(path: str) -> str:
    return f"Removed {path}: a checkpoint save that a killed process left unfinished."


def warning(message: str) -> str:
    return f"effnet-train: warning: {message}"


def worker_start(role, plan) -> str:
    c = plan.config
    return (f"worker {role.worker_id}/{role.num_workers}"
            f"{' (chief: writes config, logs, progress and export)' if role.is_chief else ''}: "
            f"{plan.num_replicas // role.num_workers} replica(s) here, "
            f"{c.train.global_batch_size // plan.num_replicas} images per replica per step")


def worker_end(role, input_pipelines: Iterable, fingerprint: str) -> str:
    pipelines = ", ".join(f"{i} of {n}" for i, n in sorted(input_pipelines)) or "none this session"
    return (f"worker {role.worker_id}/{role.num_workers}: read input pipeline {pipelines}; "
            f"weights fingerprint {fingerprint}")


def summary(results: Dict[str, Any], plan) -> str:
    """The lines after a run: steps, final eval, where the checkpoint, logs and export are."""
    c = plan.config
    lines = ["", f"Done: {results['epochs']} epochs, {results['global_step']} steps, "
                 f"{results['train_functions']} compiled train function(s) this session."]
    if "eval" in results:
        e = results["eval"]
        weights = "EMA weights" if e.get("ema") else "trained weights"
        top5 = f"top-5 {e.get('top5', float('nan')):.4f}, " if c.model.num_classes > 5 else ""
        lines.append(f"Eval accuracy ({c.data.eval_split}, {plan.eval_size} px, {weights}): "
                     f"top-1 {e.get('top1', float('nan')):.4f}, {top5}loss {e.get('loss', float('nan')):.4f}")
    lines.append(f"Checkpoint:  {results['checkpoint']}")
    lines.append(f"TensorBoard: tensorboard --logdir {results['tensorboard']}")
    if results.get("saved_model"):
        lines.append(f"SavedModel:  {paths.join(results['saved_model'], SAVED_MODEL_DIR)}  "
                     "(and .keras/TFLite beside it)")
    return "\n".join(lines)


def evaluation(checkpoint: str, results: Dict[str, Any], plan) -> str:
    c = plan.config
    return (f"Eval of {checkpoint} ({c.data.eval_split}, {plan.eval_size} px, "
            f"{'EMA' if results['ema'] else 'trained'} weights): top-1 {results['top1']:.4f}, "
            f"top-5 {results['top5']:.4f}, loss {results['loss']:.4f}")


def export_abandoned(signal_name: str, export_dir: Optional[str], global_step: int, checkpoint: Optional[str]) -> str:
    return (f"{signal_name} during the export: abandoned it, nothing was written to {export_dir}. Training is "
            f"complete (global step {global_step}, checkpoint {checkpoint}): run the same command again to export "
            "without training.")
