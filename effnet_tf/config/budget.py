"""The recipe scaled to the run: what a config leaves open ("auto" or null) is decided from the
training budget (epochs, steps), the data (training examples) and the hardware (replicas, TPU).

Why: the variant's published recipe (RMSProp at batch 4096, crops down to 5% of the area,
RandAugment 5 -> 10, EMA 0.9999, stochastic depth 0.2) is tuned for 350 epochs of ImageNet. In a
short run on a small dataset that much regularization leaves the model under-fitted: on the
scikit-learn digits (1,497 images, 15 epochs) it reached 0.51 top-1 where a plain ``model.fit``
with Adam reached 0.99 (BENCHMARKS.md, "Real data").

The rule (docs/recipe.md explains it with the measurements):

* **Regularization strength** ``s`` in [0, 1] grows with the number of epochs, on a log scale,
  from 0 at ``NO_REGULARIZATION_EPOCHS`` to 1 at ``FULL_REGULARIZATION_EPOCHS`` (the official
  350). Every regularizer the config leaves null is the variant's value scaled by ``s``:
  RandAugment magnitude (with the "increasing" ops: identity at 0), mixup alpha, dropout,
  stochastic depth and the flip probability linearly, the crop's minimum area geometrically
  (``area_min ** s``: 1 = no crop at s = 0). At 350 epochs the recipe is the
  official one exactly. ``train.regularization`` sets ``s`` by hand.
* **Evaluation crop** follows the training crops: the official ``size/(size+32)`` when the
  training crops are the official ones, the whole image when training never crops, and
  geometrically in between (the object's apparent size at test matches training; FixRes).
* **Batch**: about ``EPOCH_STEPS`` steps per epoch (the dataset size / 50, to the nearest power of
  two), at least ``MIN_BATCH``, at most ``per_replica_cap`` per replica (64 at 224 px on
  CPU/GPU, 128 on TPU, scaled by (224 / size)^2 for other sizes), a multiple of the replicas.
* **Optimizer** Adam (robust at any batch and budget; RMSProp is pinned by the ImageNet configs),
  peak LR 3e-3 at batch 32 scaled by sqrt(batch / 32) (cosine decay averages half the
  peak, so this is close to the 1e-3 a plain ``model.fit`` runs; square-root scaling for adaptive
  optimizers), also from pretrained weights (a lower rate for the backbone is
  ``train.finetune_lr_scale`` after a head-only phase).
* **Schedule** cosine to zero over the run (the exponential decay of the official recipe is tied
  to 350 epochs: at 15 epochs it never anneals), **warmup** 5% of the run, at most 5 epochs.
* **EMA** over the last ~10% of the run's steps: ``1 - 1 / (0.1 * total_steps)``, within
  [0.9, 0.9999] (the official 0.9999 over 350 x 312 steps averages over 9% of them).
"""

from __future__ import annotations

import math
from typing import Optional

#: The official recipe's budget, at which every regularizer takes the variant's value.
FULL_REGULARIZATION_EPOCHS = 350.0
#: At or below this many epochs no regularizer is applied (strength 0).
NO_REGULARIZATION_EPOCHS = 10.0
#: The auto batch aims at this many steps per epoch.
EPOCH_STEPS = 50
MIN_BATCH = 16
FLIP_PROBABILITY = 0.5  # the recipe's left-right flip at full strength
ADAM_PEAK_LR_AT_32 = 3e-3
#: Base LR per 256 images when the optimizer is named but the LR is left null.
BASE_LEARNING_RATES = {"rmsprop": 0.016, "sgd": 0.1}
WARMUP_FRACTION = 0.05
MAX_WARMUP_EPOCHS = 5.0
EMA_HORIZON_FRACTION = 0.1
EMA_DECAY_RANGE = (0.9, 0.9999)


def regularization_strength(epochs: float) -> float:
    """``s``: 0 at or below ``NO_REGULARIZATION_EPOCHS``, 1 at or above ``FULL_REGULARIZATION_EPOCHS``,
    log-linear in between."""
    if epochs <= NO_REGULARIZATION_EPOCHS:
        return 0.0
    s = math.log(epochs / NO_REGULARIZATION_EPOCHS) / math.log(FULL_REGULARIZATION_EPOCHS / NO_REGULARIZATION_EPOCHS)
    return min(1.0, s)


def scaled_crop_area(variant_area_min: float, strength: float) -> float:
    """The crop's minimum area at ``strength``: 1 (no crop) at 0, the variant's at 1, geometric between."""
    return float(variant_area_min) ** float(strength)


def eval_crop_fraction(crop_area_min: float, variant_area_min: float, image_size: int) -> float:
    """The central crop that matches training crops down to ``crop_area_min``: the official
    ``size/(size+32)`` (below 320 px) at the variant's crops, 1 (the whole image) without crops."""
    official = image_size / (image_size + 32.0) if image_size < 320 else 1.0
    if crop_area_min >= 1.0:
        return 1.0
    t = min(1.0, math.log(crop_area_min) / math.log(variant_area_min))
    return official ** t


def per_replica_cap(image_size: int, on_tpu: bool) -> int:
    """The largest auto batch per replica at ``image_size`` (a power of two, at least 8)."""
    base = 128 if on_tpu else 64
    return max(8, _power_of_two_below(base * (224.0 / max(int(image_size), 1)) ** 2))


def auto_batch_size(train_examples: int, num_replicas: int, image_size: int, on_tpu: bool) -> int:
    """About ``EPOCH_STEPS`` steps per epoch, within ``[MIN_BATCH, cap x replicas]``, a multiple of the replicas."""
    replicas = max(1, int(num_replicas))
    wanted = _nearest_power_of_two(max(1, train_examples) / EPOCH_STEPS)
    batch = min(max(wanted, MIN_BATCH), per_replica_cap(image_size, on_tpu) * replicas)
    batch = max(replicas, batch // replicas * replicas)
    return int(batch)


def auto_peak_learning_rate(global_batch_size: int) -> float:
    """Adam's peak LR: 3e-3 at batch 32, x sqrt(batch / 32)."""
    return ADAM_PEAK_LR_AT_32 * math.sqrt(global_batch_size / 32.0)


def auto_warmup_epochs(epochs: float) -> float:
    return round(min(MAX_WARMUP_EPOCHS, WARMUP_FRACTION * epochs), 4)


def auto_ema_decay(total_steps: int) -> float:
    low, high = EMA_DECAY_RANGE
    horizon = EMA_HORIZON_FRACTION * max(1, total_steps)
    return round(min(high, max(low, 1.0 - 1.0 / horizon)), 6)


def _nearest_power_of_two(x: float) -> int:
    return 2 ** max(0, int(round(math.log2(max(x, 1.0)))))


def _power_of_two_below(x: float) -> int:
    return 2 ** max(0, int(math.floor(math.log2(max(x, 1.0)))))


def describe_strength(epochs: float, strength: float, explicit: Optional[float]) -> str:
    if explicit is not None:
        return f"regularization {strength:.2f} of the variant's ImageNet recipe (train.regularization)"
    return (f"regularization {strength:.2f} of the variant's ImageNet recipe, from {epochs:g} epochs "
            f"(0 at <= {NO_REGULARIZATION_EPOCHS:g}, 1 at {FULL_REGULARIZATION_EPOCHS:g}, log scale)")
