"""One contract for every Keras layer the package registers: it builds and
runs on a small input, and its config (directly, and serialised as a
``.keras`` file stores it) rebuilds a layer that computes the same outputs
from the same weights, without ``custom_objects``."""
from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientdet_tf.modeling
from efficientdet_tf.modeling import (bifpn, efficientnet, fpn_topologies, heads,
                                      layers)

_BN = {"bn_momentum": 0.99, "bn_epsilon": 1e-3}
_BLOCK = {"num_repeat": 1, "kernel_size": 3, "strides": 1, "expand_ratio": 2,
          "input_filters": 4, "output_filters": 4, "se_ratio": 0.25,
          "id_skip": True}
# Levels 3..4 of a 32 px image: 4x4 and 2x2 maps.
_TWO_LEVELS = [[1, 4, 4, 4], [1, 2, 2, 4]]
_CELL = {"topology": [n.as_config() for n in fpn_topologies.bifpn_topology(3, 4)],
         "min_level": 3, "max_level": 4,
         "feat_sizes": [[32 // 2 ** level] * 2 for level in range(5)],
         "filters": 4, "weight_method": "fastattn", "act_type": "swish",
         "node_options": _BN}

# Registered class name -> (a small instance, the shapes of its input).
EXAMPLES: dict[str, tuple[Callable[[], keras.layers.Layer], Any]] = {
    "FusedBatchNormalization": (
        lambda: layers.batch_norm("bn", 0.9, 1e-3), [2, 4, 4, 3]),
    "DepthwiseConv2D": (
        lambda: layers.DepthwiseConv2D(5, padding="same", use_bias=False),
        [2, 6, 6, 3]),
    "SqueezeExcite": (
        lambda: efficientnet.SqueezeExcite(2, 4, "swish"), [1, 4, 4, 4]),
    "MBConvBlock": (
        lambda: efficientnet.MBConvBlock(_BLOCK, "swish", survival_prob=0.8,
                                         **_BN), [1, 4, 4, 4]),
    "ConvBnAct": (
        lambda: efficientnet.ConvBnAct(4, 3, 2, "relu6", **_BN), [1, 8, 8, 3]),
    "ClassifierHead": (
        lambda: efficientnet.ClassifierHead(5, 0.2, 8, 1, 1, "swish", **_BN),
        [1, 4, 4, 3]),
    "EfficientNet": (
        lambda: efficientnet.EfficientNet(
            "efficientnet-b0", block_strings=["r1_k3_s11_e1_i32_o16_se0.25",
                                              "r1_k3_s22_e6_i16_o24_se0.25"]),
        [1, 16, 16, 3]),
    "ResampleFeatureMap": (
        lambda: bifpn.ResampleFeatureMap([2, 2], 4, **_BN), [1, 4, 4, 3]),
    "OpAfterCombine": (
        lambda: bifpn.OpAfterCombine(4, "swish", **_BN), [1, 4, 4, 4]),
    "FNode": (
        lambda: bifpn.FNode(3, [0, 1], 2, [4, 4], 4, "fastattn", "swish",
                            **_BN), _TWO_LEVELS),
    "FPNCell": (lambda: bifpn.FPNCell(**_CELL), _TWO_LEVELS),
    "FPNCells": (lambda: bifpn.FPNCells(2, _CELL), _TWO_LEVELS),
    "HeadNet": (
        lambda: heads.class_net(3, num_anchors=2, filters=4, min_level=3,
                                max_level=4, repeats=2, act_type="swish",
                                survival_prob=0.8, **_BN), _TWO_LEVELS),
}


def _registered_layers() -> set[str]:
    """Layer classes registered by the package once every modeling module
    is imported (registration happens at import)."""
    for module in pkgutil.iter_modules(efficientdet_tf.modeling.__path__):
        importlib.import_module(f"efficientdet_tf.modeling.{module.name}")
    return {cls.__name__ for cls in keras.saving.get_custom_objects().values()
            if isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
            and cls.__module__.startswith("efficientdet_tf.")}


def _inputs(shapes: Any) -> Any:
    """Random inputs of nested ``shapes`` (a shape or a list of shapes)."""
    if isinstance(shapes[0], int):
        return tf.random.stateless_normal(shapes, seed=[len(shapes), 1])
    return [_inputs(shape) for shape in shapes]


def _outputs(layer: keras.layers.Layer, inputs: Any) -> list[np.ndarray]:
    return [np.asarray(t) for t in tf.nest.flatten(layer(inputs, training=False))]


def _same_computation(layer: keras.layers.Layer, rebuilt: keras.layers.Layer,
                      inputs: Any) -> None:
    assert type(rebuilt) is type(layer)
    rebuilt(inputs)  # builds its variables, in the original's order
    rebuilt.set_weights(layer.get_weights())
    assert [w.path for w in rebuilt.weights] == [w.path for w in layer.weights]
    for ours, theirs in zip(_outputs(layer, inputs), _outputs(rebuilt, inputs)):
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-6)


def test_every_registered_layer_has_an_example():
    assert _registered_layers() == set(EXAMPLES)


@pytest.fixture(params=sorted(EXAMPLES))
def built(request) -> tuple[keras.layers.Layer, Any]:
    make, shapes = EXAMPLES[request.param]
    layer, inputs = make(), _inputs(shapes)
    _outputs(layer, inputs)
    assert layer.built and layer.weights
    # Moving statistics away from their initial values, so a rebuilt layer
    # that ignored the copied weights would compute something else.
    layer.set_weights([w + 0.1 for w in layer.get_weights()])
    return layer, inputs


def test_config_round_trip(built):
    layer, inputs = built
    _same_computation(layer, type(layer).from_config(layer.get_config()), inputs)


def test_serialization_round_trip_through_json(built):
    layer, inputs = built
    stored = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert stored["registered_name"] == f"efficientdet_tf>{type(layer).__name__}"
    _same_computation(layer, keras.saving.deserialize_keras_object(stored),
                      inputs)
