"""EfficientNet: block decoding, compound scaling and the official sizes."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.modeling.efficientnet import (
    BlockArgs, EfficientNet, MBConvBlock, build_classifier, decode_block_string,
    expand_blocks, round_filters, round_repeats)

# Trainable parameters of the official classifiers (1000 classes).
OFFICIAL_CLASSIFIER_PARAMS = {
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232,
    "b4": 19_341_616, "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960,
}


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("variant", sorted(OFFICIAL_CLASSIFIER_PARAMS))
def test_classifier_parameter_counts(variant):
    keras.backend.clear_session()
    model = build_classifier(f"efficientnet-{variant}", image_size=32)
    assert trainable_count(model) == OFFICIAL_CLASSIFIER_PARAMS[variant]


def test_decode_block_string():
    assert decode_block_string("r2_k5_s22_e6_i24_o40_se0.25") == BlockArgs(
        num_repeat=2, kernel_size=5, strides=2, expand_ratio=6,
        input_filters=24, output_filters=40, se_ratio=0.25)
    assert decode_block_string("r1_k3_s11_e1_i32_o16").se_ratio is None
    assert not decode_block_string("r1_k3_s11_e1_i32_o16_noskip").id_skip
    with pytest.raises(ValueError, match="block string"):
        decode_block_string("k3_r1")


@pytest.mark.parametrize("filters,width,expected", [
    (32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (320, 1.4, 448),
    (1280, 2.0, 2560), (16, 1.8, 32), (24, 1.1, 24), (40, 1.2, 48),
])
def test_round_filters_official_rule(filters, width, expected):
    assert round_filters(filters, width) == expected


def test_round_repeats_rounds_up():
    assert round_repeats(3, 1.1) == 4
    assert round_repeats(1, 3.1) == 4


def test_expand_blocks_b0_and_lite_fixed_ends():
    b0 = expand_blocks("efficientnet-b0")
    assert len(b0) == 16
    assert [b.strides for b in b0].count(2) == 4
    lite4 = expand_blocks("efficientnet-lite4")
    b4 = expand_blocks("efficientnet-b4")
    # lite keeps the first/last stage at one block; b4 scales them to 2.
    first_stage = round_filters(16, 1.4)
    last_stage = round_filters(320, 1.4)
    assert [b.output_filters for b in lite4].count(first_stage) == 1
    assert [b.output_filters for b in b4].count(first_stage) == 2
    assert [b.output_filters for b in lite4].count(last_stage) == 1
    assert [b.output_filters for b in b4].count(last_stage) == 2
    assert all(b.se_ratio is None for b in lite4)


def test_feature_extractor_endpoints():
    layer = EfficientNet("efficientnet-b0")
    endpoints = layer(tf.zeros([2, 64, 96, 3]))
    assert [tuple(e.shape) for e in endpoints] == [
        (2, 32, 48, 16), (2, 16, 24, 24), (2, 8, 12, 40), (2, 4, 6, 112),
        (2, 2, 3, 320)]


def test_lite_uses_relu6_and_no_se():
    layer = EfficientNet("efficientnet-lite0")
    layer(tf.zeros([1, 32, 32, 3]))
    assert layer.act_type == "relu6"
    assert not any("/se/" in w.path for w in layer.weights)


def test_drop_connect_only_in_training():
    block = MBConvBlock(
        dict(num_repeat=1, kernel_size=3, strides=1, expand_ratio=6,
             input_filters=8, output_filters=8, se_ratio=0.25),
        "swish", 0.99, 1e-3, survival_prob=0.5)
    x = tf.random.normal([16, 4, 4, 8], seed=1)
    assert block.has_residual
    inference = [block(x, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    tf.random.set_seed(3)
    trained = block(x, training=True).numpy()
    # With survival 0.5 over 16 samples some branches are dropped: those
    # samples equal their input exactly (residual only).
    dropped = [np.array_equal(trained[i], x.numpy()[i]) for i in range(16)]
    assert 0 < sum(dropped) < 16


def test_se_bottleneck_uses_input_filters():
    layer = EfficientNet("efficientnet-b0")
    layer(tf.zeros([1, 32, 32, 3]))
    shapes = {w.path: tuple(w.shape) for w in layer.weights}
    # blocks_1: input 16 filters, expanded 96 -> SE reduces to 16*0.25 = 4.
    assert shapes["efficientnet-b0/blocks_1/se/conv2d/kernel"] == (1, 1, 96, 4)


def test_batch_norm_settings_from_arguments():
    layer = EfficientNet("efficientnet-b0", bn_momentum=0.9, bn_epsilon=1e-5)
    bn = layer.stem.bn
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
