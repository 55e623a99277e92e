"""Test-wide TensorFlow set-up.

The CPU is split into two logical devices before anything else touches TensorFlow, so
MirroredStrategy tests exercise real cross-replica code on this machine (TPU paths run
through the same tf.distribute code).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
# Only look at the configuration: listing logical devices would initialise TF and freeze it.
if _cpus and not tf.config.get_logical_device_configuration(_cpus[0]):
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # already initialised by an earlier import; run with one device
        pass
