"""Choose the ``tf.distribute`` strategy training runs under (``--strategy``).

Every strategy runs the same training step: the loop never branches on the
strategy, only on ``num_replicas_in_sync`` (see :mod:`efficientdet_tf.training.trainer`
for how losses and gradients combine across replicas).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from efficientdet_tf.errors import EfficientDetError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


class StrategyError(EfficientDetError, ValueError):
    """A strategy that cannot be set up as asked; the message says why."""


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy for ``--strategy=name``.

    ``default``: TensorFlow's default (no distribution; one GPU if present,
    else CPU). ``one_device``: the same placement made explicit.
    ``mirrored``: every local GPU (the CPU when there is none).
    ``multi_worker``: all GPUs of every worker in ``TF_CONFIG``.
    ``tpu``: the TPU named by ``tpu`` (``local`` on a TPU VM).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not tpu:
            raise StrategyError("--strategy=tpu needs --tpu: the TPU name or "
                                "grpc:// address ('local' on a TPU VM)")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"unknown strategy {name!r}; choose one of "
                        f"{', '.join(STRATEGIES)}")


def _check_tf_config() -> None:
    """MultiWorkerMirroredStrategy without a usable ``TF_CONFIG`` silently
    trains alone (or hangs waiting for peers): refuse early instead."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable "
            "(cluster: {worker: [host:port, ...]}, task: {type, index})")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise StrategyError(f"TF_CONFIG is not valid multi-worker JSON "
                            f"({type(err).__name__}: {err})") from None
    if not workers:
        raise StrategyError("TF_CONFIG lists no workers")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (config, checkpoints,
    summaries). Only multi-worker runs have non-chief processes."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
