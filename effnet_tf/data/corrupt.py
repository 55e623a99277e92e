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

Every pass over the records ends with one sentinel element (after each repetition when the
data repeats), so a corrupt last element is noticed as well, and so is a pass that produced no
usable record at all (a shard of garbage, every image corrupt): that is an error naming the
data, with or without ``skip_corrupt``, rather than an empty or endlessly skipping dataset.
"""
from __future__ import annotations

import sys

import tensorflow as tf

HINT = "data.skip_corrupt=true in a config (skip_corrupt=True in build_dataset) skips corrupt records"


def _sentinel_like(spec):
    return tf.nest.map_structure(
        lambda s: tf.zeros([d if d is not None else 0 for d in s.shape], s.dtype), spec)


def guarded_map(records: tf.data.Dataset, fn, dummy_fn, *, skip_corrupt: bool, repeat: bool,
                description: str = "the data", num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Maps ``fn(index, record)`` over ``records`` (dicts with an ``origin`` string), repeated
    forever when ``repeat``.

    Elements on which ``fn`` (or the reading upstream) fails raise an ``InvalidArgumentError``
    naming the record's origin, or, with ``skip_corrupt``, are dropped and reported on stderr
    with a running count. A pass over ``records`` without one usable element raises an
    ``InvalidArgumentError`` naming ``description``. ``dummy_fn()`` must return a value of
    ``fn``'s structure (used for the sentinels only). Returns the dataset of ``fn``'s outputs.
    """
    sentinel = _sentinel_like(records.element_spec)
    ds = records.map(lambda r: (r, False)).concatenate(tf.data.Dataset.from_tensors((sentinel, True)))
    if repeat:
        ds = ds.repeat()
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
        expected, skipped, usable = state
        index, out, is_sentinel, prev_index, prev_origin = element
        missing = index - expected
        decode_failed = tf.equal(prev_index, index - 1)  # else: failed while reading
        what = tf.where(decode_failed, "corrupt image in", f"unreadable record in {description}, after")
        where = tf.where(tf.equal(prev_origin, ""), "its start", prev_origin)
        if skip_corrupt:
            report = tf.cond(
                missing > 0,
                lambda: tf.print("effnet_tf.data: skipped", missing, "record(s):", what,
                                 where, "- total skipped:", skipped + missing,
                                 output_stream=sys.stderr),
                tf.no_op)
            deps = [report]
        else:
            deps = [tf.debugging.Assert(
                tf.equal(missing, 0),
                ["effnet_tf.data:", what, where, f"({HINT})"])]
        deps.append(tf.debugging.Assert(
            tf.logical_or(tf.logical_not(is_sentinel), usable > 0),
            ["effnet_tf.data: no usable record in a whole pass over", description,
             "- every record failed to read or decode (an unreadable shard, or all images corrupt)"]))
        with tf.control_dependencies(deps):
            index = tf.identity(index)
        usable = tf.where(is_sentinel, tf.constant(0, tf.int64), usable + 1)
        return (index + 1, skipped + missing, usable), (out, is_sentinel)

    ds = ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(0, tf.int64)), check)
    ds = ds.filter(lambda out, is_sentinel: tf.logical_not(is_sentinel))
    return ds.map(lambda out, is_sentinel: out)
