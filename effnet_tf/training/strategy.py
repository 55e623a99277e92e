"""Choosing and creating the tf.distribute strategy, and the Keras precision policy.

TPU: ``TPUClusterResolver`` -> ``experimental_connect_to_cluster`` -> ``initialize_tpu_system``
-> ``TPUStrategy``. Also MirroredStrategy (several GPUs, or several logical CPUs in tests),
MultiWorkerMirroredStrategy (``TF_CONFIG``), OneDeviceStrategy and the default strategy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Optional

import tensorflow as tf

from effnet_tf.config.schema import PRECISIONS, STRATEGIES

log = logging.getLogger(__name__)


class TPUUnavailableError(RuntimeError):
    """``--strategy=tpu`` was asked for and no TPU could be reached."""


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def detect_strategy(tpu: Optional[str] = None) -> str:
    """The strategy ``auto`` picks: tpu, multi_worker, mirrored or default.

    The environment is read before any device is listed: listing devices initialises
    TensorFlow, after which MultiWorkerMirroredStrategy can no longer configure its collectives.
    """
    if tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    if _tf_config_workers() > 1:
        return "multi_worker"
    if tf.config.list_logical_devices("TPU"):
        return "tpu"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def tpu_strategy(tpu: Optional[str] = None) -> tf.distribute.TPUStrategy:
    """Connects to a TPU (name, ``local`` or ``grpc://host:port``) and returns a TPUStrategy.

    Raises ``TPUUnavailableError`` naming what was tried when no TPU can be resolved.
    """
    target = tpu if tpu is not None else os.environ.get("TPU_NAME")
    tried = f"--tpu={tpu!r}" if tpu is not None else (
        f"TPU_NAME={target!r}" if target else "no --tpu flag and no TPU_NAME environment variable")
    hint = (
        "Pass --tpu=<TPU name | local | grpc://host:port> on a machine that can reach the TPU, "
        "or choose another strategy (--strategy=default, mirrored, one_device or multi_worker)."
    )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
    except Exception as error:  # noqa: BLE001 — ValueError, URLError, NotFoundError... all mean "no TPU"
        raise TPUUnavailableError(
            f"--strategy=tpu: no TPU could be resolved ({tried}): {type(error).__name__}: {error}. {hint}"
        ) from error
    try:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as error:  # noqa: BLE001
        raise TPUUnavailableError(
            f"--strategy=tpu: resolved {tried} (master {resolver.master()!r}) but could not initialise a TPU "
            f"system: {type(error).__name__}: {str(error).splitlines()[0]}. {hint}"
        ) from error
    strategy = tf.distribute.TPUStrategy(resolver)
    log.info("TPU %s: %d cores", target, strategy.num_replicas_in_sync)
    return strategy


def _local_devices():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def create_strategy(name: str = "auto", tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Creates the strategy called ``name`` (one of ``STRATEGIES``; ``auto`` detects)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} is not one of {list(STRATEGIES)}.")
    if name == "auto":
        name = detect_strategy(tpu)
    if name == "tpu":
        return tpu_strategy(tpu)
    if tpu:
        raise ValueError(f"--tpu={tpu!r} was given with --strategy={name}; use --strategy=tpu (or auto).")
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPUs (how tests exercise cross-replica code).
        return tf.distribute.MirroredStrategy(devices=_local_devices())
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            log.warning("--strategy=multi_worker without TF_CONFIG: running as a single worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(_local_devices()[0])
    return tf.distribute.get_strategy()


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers of a run."""

    worker_id: int = 0
    num_workers: int = 1

    @property
    def is_chief(self) -> bool:
        """The chief (worker 0, or the TPU coordinator) writes the run's shared files."""
        return self.worker_id == 0

    @property
    def multi_worker(self) -> bool:
        return self.num_workers > 1


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    """The role of this process: several only under MultiWorkerMirroredStrategy with a cluster.

    A TPUStrategy program is one client (on a pod slice, the coordinator drives every host),
    so it is always the chief. With a ``chief`` task in ``TF_CONFIG`` that task is worker 0 and
    the ``worker`` tasks follow it.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return WorkerRole()
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    chiefs, workers = len(jobs.get("chief", [])), len(jobs.get("worker", []))
    if chiefs + workers <= 1:
        return WorkerRole()
    task_id = int(resolver.task_id or 0)
    worker_id = task_id if resolver.task_type == "chief" else chiefs + task_id
    return WorkerRole(worker_id=worker_id, num_workers=chiefs + workers)


def is_tpu_strategy(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def set_precision(precision: str) -> str:
    """Sets the global Keras dtype policy (``float32``, ``mixed_bfloat16`` or ``mixed_float16``)."""
    import keras

    if precision not in PRECISIONS or precision == "auto":
        raise ValueError(f"precision must be one of {list(PRECISIONS[1:])}, got {precision!r}.")
    keras.mixed_precision.set_global_policy(precision)
    return precision
