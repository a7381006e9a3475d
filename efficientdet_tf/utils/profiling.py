"""Model cost: multiply-adds, parameter counts and inference latency.

FLOPs follow automl's ``num_params_flops``: TF's graph profiler (tfprof) on the
traced inference graph, whose float-op count is halved because tfprof counts a
multiply-add as two operations. The result is "FLOPs" in the EfficientDet
paper's sense (2.5B for D0 at 512x512), i.e. multiply-adds.

tfprof counts the ops with a registered ``flops`` statistic: convolutions
(including depthwise), BiasAdd, MatMul, pooling, reductions, and elementwise
Add/Mul/... at one op per element; Sigmoid, casts and reshapes count zero.
So the count depends on how the graph spells a layer, not only on its work:
Keras 3's BatchNormalization traces inference as an elementwise scale and
shift (counted: 0.039B for D0) where TF's fused batch-norm op, which automl's
graph used, counts zero; ``tf.nn.silu`` multiplies its input by ``beta=1.0``
before the sigmoid (counted: 0.018B). D0 with Keras's batch norm gives 2.587B,
1.8 % above automl's 2.54B; without those two terms, 2.530B.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

# tfprof counts a multiply-add as one multiply plus one add.
FLOPS_PER_MULTIPLY_ADD = 2


def count_flops(model: keras.Model, batch_size: int = 1) -> int:
    """Multiply-adds of one inference forward pass of ``model``.

    The model is traced once (``training=False``) for a fixed input of
    ``batch_size`` images of the model's input size, so every tensor shape in
    the graph is static and tfprof can count every op; nothing is executed.
    """
    if len(model.inputs) != 1:
        raise ValueError(f"count_flops expects a single-input model, "
                         f"{model.name!r} has {len(model.inputs)} inputs")
    spec = model.inputs[0]
    if any(dim is None for dim in spec.shape[1:]):
        raise ValueError(f"{model.name!r} has a dynamic input size "
                         f"{tuple(spec.shape)}; FLOPs need a fixed image size")
    signature = tf.TensorSpec((batch_size, *spec.shape[1:]), spec.dtype)
    forward = tf.function(lambda images: model(images, training=False))
    graph = forward.get_concrete_function(signature).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, cmd="op",
                                            options=options)
    return int(profile.total_float_ops) // FLOPS_PER_MULTIPLY_ADD


def count_params(model: keras.Model, trainable_only: bool = True) -> int:
    """Number of scalars in the model's (trainable) weights.

    ``trainable_only=False`` adds the non-trainable ones (batch-norm moving
    mean and variance), i.e. everything a checkpoint stores.
    """
    weights = model.trainable_weights if trainable_only else model.weights
    return sum(math.prod(w.shape) for w in weights)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Wall-clock times of timed forward passes of one batch each."""
    batch_size: int
    batch_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        """Median milliseconds per image."""
        return float(np.median(self.batch_ms)) / self.batch_size

    @property
    def p90_ms(self) -> float:
        """90th-percentile milliseconds per image."""
        return float(np.percentile(self.batch_ms, 90)) / self.batch_size

    @property
    def images_per_second(self) -> float:
        """Throughput at the median batch time."""
        return 1000.0 / self.median_ms

    def text(self) -> str:
        return (f"batch {self.batch_size}, {len(self.batch_ms)} runs: median "
                f"{self.median_ms:.1f} ms/image, p90 {self.p90_ms:.1f} "
                f"ms/image, {self.images_per_second:.2f} images/s")


def measure_latency(models: Mapping[str, keras.Model], batch_size: int = 1,
                    runs: int = 50, warmup: int = 5,
                    jit_compile: bool = False) -> dict[str, Latency]:
    """Times inference of each model on one fixed random batch.

    Each model runs as a ``tf.function`` (traced, and with ``jit_compile``
    XLA-compiled, during the ``warmup`` calls). The timed runs go round-robin
    over the models, so load from other processes on a shared machine skews
    every model alike and their differences stay meaningful. Every run waits
    for its result before the clock stops.
    """
    if batch_size < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, runs >= 1 and warmup >= 0; "
                         f"got {batch_size}, {runs} and {warmup}")
    forwards, batches = {}, {}
    for name, model in models.items():
        shape = (batch_size, *model.inputs[0].shape[1:])
        batches[name] = tf.random.stateless_normal(
            shape, seed=(0, 0), dtype=model.inputs[0].dtype)
        forwards[name] = tf.function(
            lambda images, model=model: model(images, training=False),
            jit_compile=jit_compile)
        for _ in range(warmup):
            _run_to_completion(forwards[name], batches[name])
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(runs):
        for name, forward in forwards.items():
            start = time.perf_counter()
            _run_to_completion(forward, batches[name])
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: Latency(batch_size, tuple(t)) for name, t in times.items()}


def _run_to_completion(forward: tf.types.experimental.PolymorphicFunction,
                       images: tf.Tensor) -> None:
    """Runs ``forward`` and blocks until its outputs exist (fetching one
    output to the host is the synchronisation point)."""
    tf.nest.flatten(forward(images))[-1].numpy()


def network_stages(model: keras.Model,
                   backbone_name: str) -> dict[str, keras.Model]:
    """Prefixes of an EfficientDet network (shared weights): up to the
    backbone's endpoints, up to the BiFPN's outputs (including the pooled
    P6/P7), and the whole network. The difference between consecutive
    prefixes is the cost of one stage: backbone, BiFPN, heads."""
    try:
        backbone = model.get_layer(backbone_name).output
        bifpn = model.get_layer("fpn_cells").output
    except ValueError as err:
        raise ValueError(f"{model.name!r} is not an EfficientDet network from "
                         f"build_model ({err})") from None
    inputs = model.inputs
    return {"backbone": keras.Model(inputs, backbone, name="to_backbone"),
            "+bifpn": keras.Model(inputs, bifpn, name="to_bifpn"),
            "+heads": model}
