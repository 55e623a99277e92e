"""Resolve once, then run: ``make_plan`` turns a user's config and what the data source and the
hardware say into a frozen ``Plan`` that everything downstream reads.

The plan holds the resolved, validated, read-only config and everything derived from it: the
image-size buckets, the progressive stages with their final (snapped) sizes, the eval size,
steps per epoch and in total, whether the train step is XLA-compiled, and the run directory.
Nothing after ``make_plan`` validates, resolves or snaps a size again.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

from effnet_tf import config as config_lib
from effnet_tf.config.schema import ExperimentConfig
from effnet_tf.storage.run_directory import RunDirectory
from effnet_tf.training import schedule as schedule_lib


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run needs to know before it starts (see the module docstring)."""

    config: ExperimentConfig  # resolved, validated and frozen
    buckets: Tuple[int, ...]
    schedule: schedule_lib.ScheduleSpec
    stages: Tuple[schedule_lib.Stage, ...]
    steps_per_epoch: int
    total_steps: int
    eval_size: int
    num_replicas: int
    on_tpu: bool
    jit_compile: bool
    run_dir: Optional[RunDirectory]
    #: What the budget rule chose and why (``effnet_tf.config.budget``), for the console.
    recipe_notes: Tuple[str, ...] = ()

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    @property
    def sizes(self) -> List[int]:
        """The distinct training image sizes, in order of first use (= compiled train programs)."""
        return schedule_lib.distinct_sizes(self.stages)

    @property
    def export_dir(self) -> Optional[str]:
        """``export.dir``, or ``<model_dir>/export`` when that is null."""
        if self.config.export.dir:
            return self.config.export.dir
        return self.run_dir.export if self.run_dir is not None else None

    @property
    def train_crop_fallback(self) -> Optional[float]:
        """The training crop where none can be sampled: the official ``size/(size+32)`` (None)
        when the crops are the variant's own, else the run's evaluation view."""
        from effnet_tf.model.variants import recipe

        d = self.config.data
        return None if d.crop_area_min <= recipe(self.config.model.name)["crop_area_min"] else d.eval_crop_fraction

    def stage_at_epoch(self, epoch: int) -> schedule_lib.Stage:
        return schedule_lib.stage_at_epoch(self.schedule, self.config.runtime.seed, epoch)

    def should_evaluate(self, epoch: int) -> bool:
        """Whether ``train_and_eval`` evaluates after (0-based) ``epoch``."""
        every = self.config.eval.every_epochs
        if every:
            return (epoch + 1) % every == 0 or epoch + 1 == self.epochs
        frequency = self.config.eval.frequency
        if frequency == "epoch":
            return True
        if frequency == "stage":
            return any(stage.end_epoch == epoch + 1 for stage in self.stages)
        return epoch + 1 == self.epochs


def make_plan(
    config: ExperimentConfig,
    *,
    num_classes: Optional[int] = None,
    train_examples: Optional[int] = None,
    num_replicas: int = 1,
    on_tpu: bool = False,
    writer: bool = True,
    worker_id: int = 0,
) -> Plan:
    """The plan of ``config`` (left unchanged) for a source with ``num_classes`` classes and
    ``train_examples`` training examples, on ``num_replicas`` replicas (``on_tpu``).

    ``writer``/``worker_id`` say whether this process writes the run directory's shared files.
    Raises ``ValueError`` naming every invalid key.
    """
    notes: List[str] = []
    resolved = config_lib.resolve(config, on_tpu=on_tpu, num_classes=num_classes, train_examples=train_examples,
                                  num_replicas=num_replicas, notes=notes)
    config_lib.validate(resolved, num_replicas=num_replicas)
    config_lib.freeze(resolved)
    buckets = schedule_lib.training_buckets(resolved)
    spec = schedule_lib.spec_from_config(resolved, buckets)
    stages = tuple(schedule_lib.build_schedule(spec, resolved.runtime.seed))
    t, r = resolved.train, resolved.runtime
    run_dir = RunDirectory(r.model_dir, writer=writer, worker_id=worker_id) if r.model_dir else None
    return Plan(
        config=resolved, buckets=buckets, schedule=spec, stages=stages, steps_per_epoch=t.steps_per_epoch,
        total_steps=t.epochs * t.steps_per_epoch, eval_size=resolved.eval.image_size, num_replicas=num_replicas,
        on_tpu=on_tpu, jit_compile=bool(r.jit_compile) and not on_tpu, run_dir=run_dir, recipe_notes=tuple(notes),
    )
