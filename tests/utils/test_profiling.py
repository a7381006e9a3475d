"""FLOPs and parameter counts against the published EfficientDet-D0 numbers,
and the latency helpers behind ``benchmarks/latency.py``."""
from __future__ import annotations

import importlib.util
import math
import pathlib
import statistics

import keras
import pytest

from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.utils.profiling import (count_flops, count_params,
                                       measure_latency, network_stages)

LATENCY_CLI = (pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
               / "latency.py")

# automl README / paper Table 2: EfficientDet-D0, 512x512, 2.54B multiply-adds.
D0_MULTIPLY_ADDS = 2.54e9


@pytest.fixture(scope="module")
def d0() -> keras.Model:
    return build_model(get_config("efficientdet-d0"))


def test_d0_flops_match_paper(d0):
    flops = count_flops(d0)
    assert abs(flops - D0_MULTIPLY_ADDS) / D0_MULTIPLY_ADDS < 0.03, flops


def test_one_conv_counts_its_multiply_adds_per_image():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(
        4, 3, padding="same", use_bias=False)(inputs))
    per_image = 8 * 8 * 4 * (3 * 3 * 3)  # outputs x (kernel area x in channels)
    assert count_flops(model) == per_image
    assert count_flops(model, batch_size=3) == 3 * per_image


def test_dynamic_image_size_is_rejected():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
    with pytest.raises(ValueError, match="dynamic input size"):
        count_flops(model)


def test_params_are_the_trainable_weights(d0):
    expected = sum(math.prod(w.shape) for w in d0.trainable_weights)
    assert count_params(d0) == expected
    # automl README: D0 has 3.9M parameters.
    assert count_params(d0) == pytest.approx(3.9e6, rel=0.02)


def test_all_params_add_batch_norm_statistics(d0):
    moving = sum(math.prod(w.shape) for w in d0.non_trainable_weights)
    assert moving > 0
    assert count_params(d0, trainable_only=False) == count_params(d0) + moving


def test_latency_times_every_model_every_run():
    inputs = keras.Input((16, 16, 3))
    small = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    results = measure_latency({"a": small, "b": small}, batch_size=2, runs=4,
                              warmup=1)
    assert set(results) == {"a", "b"}
    for latency in results.values():
        assert len(latency.batch_ms) == 4 and min(latency.batch_ms) > 0
        # Per image: the batch time divided by the batch size.
        assert latency.median_ms == pytest.approx(
            statistics.median(latency.batch_ms) / 2)
        assert latency.images_per_second == pytest.approx(1000 / latency.median_ms)


def test_stages_are_nested_prefixes(d0):
    stages = network_stages(d0, "efficientnet-b0")
    assert list(stages) == ["backbone", "+bifpn", "+heads"]
    assert len(stages["backbone"].outputs) == 5  # C1..C5
    assert len(stages["+bifpn"].outputs) == 5  # P3..P7
    assert stages["+heads"] is d0


def test_stages_need_an_efficientdet_network():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
    with pytest.raises(ValueError, match="not an EfficientDet network"):
        network_stages(model, "efficientnet-b0")


@pytest.mark.parametrize("argv", [["--jit_compile", "maybe"],
                                  ["--model_name", "efficientdet-d9"],
                                  ["--runs", "0"], ["--formats", "onnx"],
                                  ["--formats", "tflite_fp32",
                                   "--batch_size", "2"]])
def test_benchmark_rejects_bad_flags_before_building(argv, capsys):
    spec = importlib.util.spec_from_file_location("latency", LATENCY_CLI)
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    assert latency.main(argv) == 2
    assert capsys.readouterr().err.strip()
