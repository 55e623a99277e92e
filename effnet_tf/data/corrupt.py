"""Naming (or skipping) corrupt records without slowing the decode map down.

TensorFlow has no in-graph try/except, and a decode error message does not say which file it
came from. Instead of wrapping each element in its own small dataset (about 20x slower), the
decode runs as one ordered parallel map followed by ``ignore_errors()``, and a sequential
scan over the element indices notices the holes:

1. elements are numbered (``enumerate``) before decoding; an upstream read error (e.g. a
   damaged TFRecord) still consumes a number, so it leaves a hole too;
2. a scan attaches to every element the number and origin of the element *before* it;
3. after the ordered map and ``ignore_errors()``, a scan compares each number with the
   expected one: a hole means the previous element failed, and the element after the hole
   carries that element's origin (shard/file) for the error message or the skip report.

A finite dataset gets one sentinel element appended so that a corrupt last element is
noticed as well.
"""
from __future__ import annotations

import sys

import tensorflow as tf

HINT = "pass skip_corrupt=True to skip corrupt records"


def _sentinel_like(spec):
    return tf.nest.map_structure(
        lambda s: tf.zeros([d if d is not None else 0 for d in s.shape], s.dtype), spec)


def guarded_map(records: tf.data.Dataset, fn, dummy_fn, *, skip_corrupt: bool, finite: bool,
                num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Maps ``fn(index, record)`` over ``records`` (dicts with an ``origin`` string).

    Elements on which ``fn`` (or the reading upstream) fails raise an ``InvalidArgumentError``
    naming the record's origin, or, with ``skip_corrupt``, are dropped and reported on stderr
    with a running count. ``dummy_fn()`` must return a value of ``fn``'s structure (used for
    the sentinel only). Returns the dataset of ``fn``'s outputs.
    """
    ds = records.map(lambda r: (r, False))
    if finite:
        sentinel = _sentinel_like(records.element_spec)
        ds = ds.concatenate(tf.data.Dataset.from_tensors((sentinel, True)))
    ds = ds.enumerate()

    def remember_previous(state, element):
        prev_index, prev_origin = state
        index, (record, is_sentinel) = element
        return (index, record["origin"]), (index, record, is_sentinel, prev_index, prev_origin)

    ds = ds.scan((tf.constant(-1, tf.int64), tf.constant("")), remember_previous)

    def apply(index, record, is_sentinel, prev_index, prev_origin):
        out = tf.cond(is_sentinel, dummy_fn, lambda: fn(index, record))
        return index, out, is_sentinel, prev_index, prev_origin

    ds = ds.map(apply, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.ignore_errors()

    def check(state, element):
        expected, skipped = state
        index, out, is_sentinel, prev_index, prev_origin = element
        missing = index - expected
        decode_failed = tf.equal(prev_index, index - 1)  # else: failed while reading
        what = tf.where(decode_failed, "corrupt image in", "unreadable record after")
        if skip_corrupt:
            report = tf.cond(
                missing > 0,
                lambda: tf.print("effnet_tf.data: skipped", missing, "record(s):", what,
                                 prev_origin, "- total skipped:", skipped + missing,
                                 output_stream=sys.stderr),
                tf.no_op)
            deps = [report]
        else:
            deps = [tf.debugging.Assert(
                tf.equal(missing, 0),
                ["effnet_tf.data:", what, prev_origin, f"({HINT})"])]
        with tf.control_dependencies(deps):
            index = tf.identity(index)
        return (index + 1, skipped + missing), (out, is_sentinel)

    ds = ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), check)
    if finite:
        ds = ds.filter(lambda out, is_sentinel: tf.logical_not(is_sentinel))
    return ds.map(lambda out, is_sentinel: out)
