"""Where a run's files live: gs://-safe path helpers and the run directory.

The lowest layer with TensorFlow I/O: ``training``, ``export`` and ``run`` all use it, and it
imports nothing else of effnet_tf.
"""
from effnet_tf.storage.paths import exists, is_remote, join
from effnet_tf.storage.run_directory import RunDirectory

__all__ = ["RunDirectory", "exists", "is_remote", "join"]
