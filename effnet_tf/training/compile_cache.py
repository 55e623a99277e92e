"""One compiled train program per image size, reused when a size comes back.

Keras 3 wraps the train step in a ``tf.function(reduce_retracing=True)``: after a second input
shape it relaxes to a shape-polymorphic trace ``(batch, None, None, 3)``, which a TPU cannot
run as one static program, and it keeps one function for the model's lifetime. Here the model's
train-function factory is replaced (through ``keras_internals``, which owns every use of Keras
internals) by one that builds a fresh ``tf.function`` per image size
(each only ever sees one static shape, so nothing relaxes), kept in a dict ``{size: function}``
and put back in ``model.train_function`` before each ``fit`` segment.

The loop over ``steps_per_execution`` is the classic TF2 ``for _ in tf.range(n): strategy.run``
rather than Keras' Optional/while-loop, which fails under MirroredStrategy with more than one
device when ``steps_per_execution > 1`` (Keras 3.15; "You must feed a value for placeholder").
Training datasets here repeat forever, so no end-of-data handling is needed inside the loop.

``trace_count`` counts actual traces of the train step (a Python side effect that only runs
while TensorFlow traces), one per distinct graph; it is the number of compiled train programs.

Both caches also see the input iterator Keras creates for each ``fit``/``evaluate`` and, when
that call returns, hand it to ``release_in_background``: destroying a used tf.data iterator
can block for up to a minute (see ``effnet_tf/data/iterator_release.py``), which stalled
stage boundaries by 15-35 s.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import keras
import tensorflow as tf

from effnet_tf.data.iterator_release import release_in_background
from effnet_tf import keras_internals


def _reduce(outputs, strategy):
    """One value per metric from the replicas' values: their mean (over every worker's replicas:
    a collective under MultiWorkerMirroredStrategy), or on TPU the first (Keras' choice there).

    Keras' own ``reduce_per_replica`` fails under MultiWorkerMirroredStrategy: it reduces the
    scalar metrics along axis 0 (Keras 3.15).
    """
    tpu = isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))

    def one(value):
        if not isinstance(value, tf.distribute.DistributedValues):
            return value
        if tpu:
            return strategy.experimental_local_results(value)[0]
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)

    return tf.nest.map_structure(one, outputs)


class _ReleasesIterators:
    """Keeps the input iterator of the running Keras call; ``release_iterator()`` hands it to a
    background thread when the call has returned."""

    _iterator = None
    released: List = []  # the latest release threads (for tests and diagnostics)

    def _keep(self, iterator) -> None:
        self._iterator = iterator

    def release_iterator(self) -> None:
        """Destroys the last call's input iterator on a background thread."""
        if self._iterator is not None:
            self.released = self.released[-7:] + [release_in_background(self._iterator)]
            self._iterator = None


class TrainFunctionCache(_ReleasesIterators):
    """Owns ``model.train_function`` across ``fit`` calls: one static-shape program per key.

    Usage::

        cache = TrainFunctionCache(model, jit_compile=False)   # after model.compile(...)
        with cache.use(image_size):
            model.fit(dataset_at(image_size), ...)
        cache.trace_count   # programs traced so far
    """

    def __init__(self, model: keras.Model, jit_compile: bool = False):
        self.model = model
        self.jit_compile = bool(jit_compile)
        self._functions: Dict[Hashable, Callable] = {}
        self._graphs = weakref.WeakSet()
        self.traces: List[Tuple[Hashable, Tuple]] = []  # (key, input shape) per trace
        self._key: Optional[Hashable] = None
        self._step = keras_internals.replace_train_function(model, self._build_function, self._counting_step)

    @property
    def trace_count(self) -> int:
        return len(self.traces)

    def keys(self) -> List[Hashable]:
        return list(self._functions)

    def _counting_step(self, data):
        graph = tf.compat.v1.get_default_graph()
        # Runs only while tracing; MirroredStrategy calls the step once per replica in one graph.
        if tf.inside_function() and graph not in self._graphs:
            self._graphs.add(graph)
            x = data[0] if isinstance(data, (tuple, list)) else data
            self.traces.append((self._key, tuple(getattr(x, "shape", ()))))
        return self._step(data)

    def _build_function(self, force: bool = False):
        model = self.model
        if model.train_function is not None and not force:
            return model.train_function
        strategy = model.distribute_strategy
        steps = int(model.steps_per_execution or 1)
        step_fn = model.train_step

        if model.run_eagerly:
            one_step = step_fn
        else:
            # On TPU everything is XLA already; jit_compile applies to CPU/GPU.
            one_step = tf.function(step_fn, jit_compile=self.jit_compile, autograph=False)

        def loop(iterator):
            outputs = None
            if steps > 1:
                for _ in tf.range(steps - 1):
                    strategy.run(one_step, args=(next(iterator),))
            outputs = strategy.run(one_step, args=(next(iterator),))
            return _reduce(outputs, strategy)

        multi_step = loop if model.run_eagerly else tf.function(loop)

        def function(iterator):
            if isinstance(iterator, (list, tuple)):  # Keras' non-tf.data path: a buffer of batches
                outputs = None
                for data in iterator:
                    outputs = _reduce(strategy.run(one_step, args=(data,)), strategy)
                return outputs
            self._keep(iterator)
            return multi_step(iterator)

        model.train_function = function
        return function

    def activate(self, key: Hashable) -> None:
        """Makes ``key``'s program (or a fresh one, built at the next ``fit``) the model's."""
        self._key = key
        self.model.train_function = self._functions.get(key)

    def store(self) -> None:
        """Keeps the model's current program under the active key."""
        if self._key is not None and self.model.train_function is not None:
            self._functions[self._key] = self.model.train_function

    class _Use:
        def __init__(self, cache, key):
            self.cache, self.key = cache, key

        def __enter__(self):
            self.cache.activate(self.key)
            return self.cache

        def __exit__(self, *exc):
            self.cache.store()
            self.cache.release_iterator()
            return False

    def use(self, key: Hashable) -> "TrainFunctionCache._Use":
        """Context manager: ``activate(key)`` on entry; ``store()`` and ``release_iterator()`` on exit."""
        return self._Use(self, key)


class TestFunctionCache(_ReleasesIterators):
    """The same for ``model.test_function``: one program per eval size, one step per call.

    End of data is asked of the iterator before each step (``get_next_as_optional``, which
    under several workers agrees across them, so a worker whose shard ends first still joins
    the others' collectives), and metrics are reduced by ``_reduce``.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._functions: Dict[Hashable, Callable] = {}
        keras_internals.replace_test_function(model, self._build_function)

    def _build_function(self, force: bool = False):
        model = self.model
        if model.test_function is not None and not force:
            return model.test_function
        strategy = model.distribute_strategy

        def one_step(data):
            return _reduce(strategy.run(model.test_step, args=(data,)), strategy)

        step = one_step if model.run_eagerly else tf.function(one_step)

        def function(iterator):
            if isinstance(iterator, (list, tuple)):  # Keras' non-tf.data path: a buffer of batches
                outputs = None
                for data in iterator:
                    outputs = step(data)
                return outputs
            self._keep(iterator)
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                raise StopIteration
            return step(optional.get_value())

        model.test_function = function
        return function

    def evaluate(self, key: Hashable, dataset, **kwargs):
        model = self.model
        model.test_function = self._functions.get(key)
        try:
            # An evaluation ends where its data ends: no warning.
            with keras_internals.steps_per_execution(model, 1), keras_internals.data_may_end():
                return model.evaluate(dataset, return_dict=True, **kwargs)
        finally:
            if model.test_function is not None:
                self._functions[key] = model.test_function
            self.release_iterator()
