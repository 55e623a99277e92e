"""Every use of Keras internals, in one place: read this module (and run its test) before
moving the ``keras`` pin in setup.py.

Checked against Keras 3.15 and TensorFlow 2.21 (TensorFlow internals: ``merge_call`` and
``tf.Graph._get_function``).
``INTERNALS`` lists each private attribute or replaced method with the one line of why;
``missing_internals()`` says which of them a Keras version lacks, and
``tests/test_keras_internals.py`` fails naming them.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, List, Tuple

import keras
import tensorflow as tf

KERAS_CHECKED = "3.15"

# (owner, attribute, why we touch it). Public methods we *replace* per instance count too: a
# Keras that stops calling them would silently bypass our replacement.
INTERNALS: Tuple[Tuple[type, str, str], ...] = (
    (keras.Model, "make_train_function",
     "replaced: one static-shape train program per image size (compile_cache.TrainFunctionCache)"),
    (keras.Model, "make_test_function",
     "replaced: one eval program per size, end of data agreed across workers (TestFunctionCache)"),
    (keras.Model, "train_step", "wrapped: counts traces, i.e. compiled train programs"),
    (keras.Model, "_symbolic_build", "builds the compiled loss and metrics from shapes, not from a batch"),
    (keras.Model, "_maybe_symbolic_build",
     "disabled: it pulls a batch through a second iterator and reduces it across workers (fails "
     "under MultiWorkerMirroredStrategy)"),
    (keras.Model, "_flatten_layers", "every nested layer, for BatchNorm statistics and weight decay"),
    (keras.optimizers.Optimizer, "_update_model_variables_moving_average",
     "overridden by the EMA optimizers: EMA warmup and the BatchNorm statistics' average"),
    (keras.optimizers.Optimizer, "_distribution_strategy", "the strategy the EMA swap runs its assignments in"),
    (keras.optimizers.Optimizer, "_trainable_variables", "the variables the EMA averages pair with"),
    (keras.optimizers.Optimizer, "_model_variables_moving_average", "the EMA averages (Keras' use_ema)"),
    (keras.optimizers.Adam, "_momentums", "moment estimates, zeroed after a divergence (reset_moments)"),
    (keras.optimizers.Adam, "_velocities", "moment estimates, as above; RMSprop's mean square too"),
    (tf.Graph, "_get_function",
     "the graph of a nested function call (Keras' XLA-compiled grouped convolution), for the multiply-adds"),
)

# Keras' warning when a fit/evaluate input ends early: our loops end where the data ends on
# purpose (evaluation), or raise our own error naming the data (training).
RAN_OUT_OF_DATA = "Your input ran out of data"


def _has(owner: type, attribute: str) -> bool:
    if hasattr(owner, attribute):
        return True
    # Instance attributes set in __init__ (e.g. the optimizer's variable lists) exist only on
    # an instance: check a small built one.
    if issubclass(owner, keras.optimizers.Optimizer):
        optimizer = (keras.optimizers.Adam if owner is keras.optimizers.Adam else keras.optimizers.SGD)(use_ema=True)
        optimizer.build([keras.Variable(0.0)])
        return hasattr(optimizer, attribute)
    return False


def missing_internals() -> List[str]:
    """``"Owner.attribute (why)"`` for each internal this Keras lacks."""
    return [f"{owner.__name__}.{attribute} ({why})" for owner, attribute, why in INTERNALS
            if not _has(owner, attribute)]


# Model: train and test programs ------------------------------------------------------------------

def replace_train_function(model: keras.Model, build: Callable, step: Callable) -> Callable:
    """Makes ``build(force=False)`` the model's train-function factory and ``step`` its train
    step; returns the original step (which ``step`` calls)."""
    original = model.train_step
    model.train_step = step
    model.make_train_function = build
    return original


def replace_test_function(model: keras.Model, build: Callable) -> None:
    """Makes ``build(force=False)`` the model's test-function factory."""
    model.make_test_function = build


def build_compiled_state(model: keras.Model, data_batch) -> None:
    """Builds the compiled loss and metrics from ``data_batch`` (KerasTensors), and stops Keras
    from doing it again from a real batch at every ``fit``/``evaluate``."""
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=data_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


@contextlib.contextmanager
def steps_per_execution(model: keras.Model, steps: int) -> Iterator[None]:
    """``model.steps_per_execution`` set to ``steps`` for the block."""
    saved = model.steps_per_execution
    model.steps_per_execution = steps
    try:
        yield
    finally:
        model.steps_per_execution = saved


@contextlib.contextmanager
def data_may_end() -> Iterator[None]:
    """Silences Keras' "ran out of data" warning (see ``RAN_OUT_OF_DATA``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RAN_OUT_OF_DATA)
        yield


def flatten_layers(layer, include_self: bool = False) -> list:
    """Every layer nested in ``layer`` (a model or a block), and ``layer`` itself if asked."""
    return list(layer._flatten_layers(include_self=include_self))


# Optimizer: the EMA and the moment estimates ------------------------------------------------------

def optimizer_strategy(optimizer):
    """The strategy the optimizer's variables live in."""
    return optimizer._distribution_strategy


def has_ema_averages(optimizer) -> bool:
    return hasattr(optimizer, "_model_variables_moving_average")


def ema_pairs(optimizer, variables=None) -> List[Tuple]:
    """``(variable, its EMA average or None)`` of an optimizer built with ``use_ema=True``;
    ``variables`` defaults to the optimizer's trainable variables (Keras' pairing order)."""
    variables = optimizer._trainable_variables if variables is None else variables
    return list(zip(variables, optimizer._model_variables_moving_average))


def called_graphs(graph: tf.Graph, op) -> list:
    """The graphs of the functions ``op`` calls (``PartitionedCall`` and the like), or []."""
    graphs = []
    for attribute in op.node_def.attr:
        value = op.node_def.attr[attribute]
        if value.HasField("func"):
            function = graph._get_function(value.func.name)
            if function is not None and getattr(function, "graph", None) is not None:
                graphs.append(function.graph)
    return graphs


def merge_call(fn, strategy, *args):
    """TensorFlow's merge call from a replica context (cross-replica updates of the EMA)."""
    return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


#: Where Keras' optimizers keep their per-weight moment estimates (SGD, Adam, RMSprop).
MOMENT_SLOTS = ("momentums", "_momentums", "_velocities", "_average_gradients")


def moment_estimates(optimizer) -> List[Tuple[object, bool]]:
    """``(variable, is RMSprop's mean square)`` for each moment-estimate variable."""
    rmsprop = isinstance(optimizer, keras.optimizers.RMSprop)
    return [(variable, rmsprop and slot == "_velocities") for slot in MOMENT_SLOTS
            for variable in (getattr(optimizer, slot, None) or [])]


def rmsprop_mean_squares(optimizer) -> list:
    """RMSprop's mean-square accumulators (empty for other optimizers)."""
    return [variable for variable, mean_square in moment_estimates(optimizer) if mean_square]
