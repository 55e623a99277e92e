"""Training health: notices a run that is not learning and says so, once per kind, in one line
with the likely fix (a console warning and a ``progress.jsonl`` record; never an error).

Checks, from what the run already measures:

* ``loss_at_chance``: after the first epochs (past the warmup and 30% of the run), the training loss (without the
  weight-decay term) is at or above ``ln(classes)``, the loss of a uniform guess. Whatever the
  labels (one-hot, smoothed or mixed), a uniform prediction scores exactly that.
* ``train_far_below_eval``: training top-1 (measured on augmented images) far below eval top-1:
  the regularization hides the data from the model more than this budget can afford.
* ``eval_at_chance``: eval top-1 still near chance after a quarter of the run (at least 3 epochs),
  judged only where the eval ran at the size being trained (or at the last epoch): in the early
  stages of progressive learning the model has not yet seen the eval size, and its BatchNorm
  statistics are those of smaller images (measured on the demo: eval 0.33 at 64 px while training
  top-1 was 0.65 at 48 px, 0.75 at the end).

No check judges a run before its first ``MIN_STEPS_BEFORE_CHECKS`` steps.
* ``warmup_never_ends``: the learning rate would still be warming up at the last step (a plan
  check, made before the first step).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import keras

# Thresholds (docs/troubleshooting.md explains each with the run that motivated it).
MIN_EPOCHS_BEFORE_LOSS_CHECK = 2
# ... and 30% of the run: an epoch's loss and top-1 are means over its steps, so the first epochs
# carry the untrained start (the demo's epoch 2: mean loss 1.60 > ln 4 with training top-1 0.35;
# the digits' epoch 2: training top-1 0.56 against eval 0.90, 0.99 at the end).
LOSS_CHECK_FRACTION = 0.3
MIN_STEPS_BEFORE_CHECKS = 50  # a run of a few steps cannot be judged
TRAIN_EVAL_GAP = 0.15  # absolute top-1 points ...
TRAIN_EVAL_RATIO = 0.75  # ... and training below this fraction of eval
EVAL_CHECK_FRACTION = 0.25
MIN_EPOCHS_BEFORE_EVAL_CHECK = 3


def chance_top1(num_classes: int) -> float:
    """Eval top-1 below which a run counts as "at chance": min(1.5/K, 1/K + 0.1)."""
    return min(1.5 / num_classes, 1.0 / num_classes + 0.1)


def regularization_summary(config) -> str:
    t, d = config.train, config.data
    parts = [f"RandAugment {t.randaug_magnitude:g}", f"crop area >= {d.crop_area_min:g}"]
    if t.mixup_alpha:
        parts.append(f"mixup {t.mixup_alpha:g}")
    if t.cutmix_alpha:
        parts.append(f"cutmix {t.cutmix_alpha:g}")
    parts.append(f"stochastic depth {config.model.drop_connect_rate:g}")
    return ", ".join(parts)


def strong_regularization(config) -> bool:
    """Whether the regularization could be what holds a short run back."""
    t, d = config.train, config.data
    return bool(t.randaug_magnitude > 2 or d.crop_area_min < 0.5 or t.mixup_alpha or t.cutmix_alpha
                or config.model.drop_connect_rate > 0.1 or config.model.dropout_rate > 0.3)


def _peak_lr(config) -> float:
    return config.train.base_learning_rate * config.train.global_batch_size / 256.0


def plan_warnings(plan) -> List[Dict[str, object]]:
    """Checks that need no training: ``[{"check", "message"}]``."""
    t = plan.config.train
    warnings = []
    if t.warmup_epochs >= plan.epochs:
        warnings.append({
            "check": "warmup_never_ends",
            "message": (f"the learning rate never leaves its warmup: train.warmup_epochs={t.warmup_epochs:g} >= "
                        f"train.epochs={plan.epochs}, so the run ends before reaching the peak LR. Likely fix: "
                        f"train.warmup_epochs={min(5.0, 0.05 * plan.epochs):g} (or null: 5% of the run)."),
        })
    return warnings


class TrainingHealth(keras.callbacks.Callback):
    """Watches the epoch logs (``loss``, ``top1`` and, after evaluations, ``val_top1``); ``warn``
    prints a line, ``record`` writes a ``progress.jsonl`` record. Each check fires once per run
    (``fired`` holds their names)."""

    def __init__(self, config, epochs: int, warn: Callable[[str], None], record: Callable[[dict], None],
                 regularization_loss: Optional[Callable[[], float]] = None, steps_per_epoch: int = 0):
        super().__init__()
        self.config = config
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch or config.train.steps_per_epoch)
        self.num_classes = int(config.model.num_classes)
        self.warn = warn
        self.write_record = record
        self.regularization_loss = regularization_loss or (lambda: 0.0)
        self.fired: List[str] = []
        # The size the current stage trains at (the loop sets it per stage; None = the eval size).
        self.train_image_size: Optional[int] = None
        self.eval_image_size = int(config.eval.image_size)

    def _fire(self, check: str, epoch: int, message: str, **values) -> None:
        if check in self.fired:
            return
        self.fired.append(check)
        self.warn(f"not learning ({check}, epoch {epoch + 1}): {message}")
        self.write_record({"event": "health", "check": check, "epoch": epoch + 1, "message": message,
                           **{k: round(float(v), 6) for k, v in values.items()}})

    def _fix(self) -> str:
        c = self.config
        if strong_regularization(c):
            return (f"Likely fix: weaker regularization for this budget (train.regularization=0, or leave the "
                    f"regularizers null so the budget rule scales them; now {regularization_summary(c)}) or a "
                    f"lower train.base_learning_rate (peak now {_peak_lr(c):.3g}).")
        return (f"Likely fix: more train.epochs, or a lower train.base_learning_rate (peak now {_peak_lr(c):.3g}) "
                f"if the loss jumps; the regularization is already light ({regularization_summary(c)}).")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if (epoch + 1) * self.steps_per_epoch < MIN_STEPS_BEFORE_CHECKS:
            return
        self._check_loss(epoch, logs)
        if "val_top1" in logs:
            self._check_eval(epoch, logs)

    def _training_metrics_settled(self, epoch: int) -> bool:
        """Whether an epoch's training loss and top-1 (means over its steps, so they lag while the
        model learns fast) can be judged: after max(2 epochs, the warmup, 30% of the run)."""
        first = max(MIN_EPOCHS_BEFORE_LOSS_CHECK, math.ceil(self.config.train.warmup_epochs) + 1,
                    math.ceil(LOSS_CHECK_FRACTION * self.epochs))
        return epoch + 1 >= min(first, self.epochs)

    def _check_loss(self, epoch: int, logs: dict) -> None:
        loss = logs.get("loss")
        if loss is None or not self._training_metrics_settled(epoch):
            return
        try:
            data_loss = float(loss) - float(self.regularization_loss())
        except Exception:  # noqa: BLE001  (a diagnostic must never stop the run)
            data_loss = float(loss)
        uniform = math.log(self.num_classes)
        if math.isfinite(data_loss) and data_loss >= uniform:
            self._fire("loss_at_chance", epoch,
                       f"training loss {data_loss:.3f} is at or above {uniform:.3f} (ln {self.num_classes}, a "
                       f"uniform guess) after {epoch + 1} epochs. {self._fix()}",
                       loss=data_loss, uniform_loss=uniform)

    def _check_eval(self, epoch: int, logs: dict) -> None:
        eval_top1, train_top1 = float(logs["val_top1"]), logs.get("top1")
        if (train_top1 is not None and self._training_metrics_settled(epoch)
                and eval_top1 - float(train_top1) > TRAIN_EVAL_GAP
                and float(train_top1) < TRAIN_EVAL_RATIO * eval_top1):
            self._fire("train_far_below_eval", epoch,
                       f"training top-1 {float(train_top1):.3f} is far below eval top-1 {eval_top1:.3f}: the "
                       f"augmentation hides the data from the model more than {self.epochs} epochs can afford. "
                       f"{self._fix()}", train_top1=float(train_top1), eval_top1=eval_top1)
        chance = chance_top1(self.num_classes)
        same_size = self.train_image_size in (None, self.eval_image_size)
        if not same_size and epoch + 1 < self.epochs:
            return
        first = max(MIN_EPOCHS_BEFORE_EVAL_CHECK, math.ceil(EVAL_CHECK_FRACTION * self.epochs))
        if epoch + 1 >= min(first, self.epochs) and eval_top1 <= chance:
            self._fire("eval_at_chance", epoch,
                       f"eval top-1 {eval_top1:.3f} is at chance (1/{self.num_classes} = {1 / self.num_classes:.3f}) "
                       f"after {epoch + 1} epochs. Check that the eval split's labels match the training split's "
                       f"(same class folders), then the learning rate and regularization. {self._fix()}",
                       eval_top1=eval_top1, chance=1.0 / self.num_classes)
