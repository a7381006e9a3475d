"""Letterbox geometry and the inference preprocessing built on it.

The official checkpoints expect automl's input to the bit, so
``preprocess_image`` is checked bitwise against the documented formula
written out here with numpy (normalise, scale = min(H/h, W/w) in float32,
resize to int(h * scale) x int(w * scale), zero-pad bottom/right), over odd
sizes, rectangular targets and batches.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.ops.geometry import resize_crop_pad, scale_geometry
from efficientdet_tf.ops.preprocess import preprocess_image

IMAGENET = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
LITE = (127.0, 128.0)
SIZES = [(1, 1), (7, 300), (640, 480), (481, 997), (300, 7), (512, 512),
         (383, 641)]
# (image_size argument, the (H, W) it means).
TARGETS = [(512, (512, 512)), ((384, 640), (384, 640)),
           ("640x384", (384, 640))]


def reference(image: np.ndarray, output_size: tuple[int, int],
              mean: float | list[float], stddev: float | list[float]
              ) -> tuple[np.ndarray, np.float32]:
    """automl's inference input for one ``[h, w, 3]`` image, step by step."""
    height, width = output_size
    h, w = image.shape[:2]
    normalised = ((image.astype(np.float32) - np.float32(mean)) /
                  np.float32(stddev))
    scale = min(np.float32(height) / np.float32(h),
                np.float32(width) / np.float32(w))
    new_h, new_w = int(np.float32(h) * scale), int(np.float32(w) * scale)
    resized = tf.image.resize(normalised, [new_h, new_w]).numpy()
    out = np.zeros((height, width, 3), np.float32)
    out[:new_h, :new_w] = resized
    return out, np.float32(1.0) / scale


def random_image(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def assert_bitwise(actual: tf.Tensor | np.ndarray, expected: np.ndarray):
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


@pytest.mark.parametrize("image_size, output_size", TARGETS,
                         ids=[str(t) for t, _ in TARGETS])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("norm", [IMAGENET, LITE], ids=["imagenet", "lite"])
def test_preprocess_image_is_the_documented_formula_bitwise(
        size, image_size, output_size, norm):
    image = random_image(np.random.default_rng(sum(size)), *size)
    expected, factor = reference(image, output_size, *norm)
    out, to_original = preprocess_image(image, image_size, *norm)
    assert_bitwise(out, expected)
    assert_bitwise(to_original, factor)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_preprocess_batch_is_per_image_bitwise(size):
    """Eager, like the reference: in a graph, Grappler's constant folding
    turns the division by the constant stddev into a multiplication by its
    reciprocal, a last-bit difference that is TensorFlow's, not this code's."""
    rng = np.random.default_rng(sum(size))
    images = np.stack([random_image(rng, *size) for _ in range(3)])
    expected = [reference(image, (384, 640), *IMAGENET) for image in images]
    out, to_original = preprocess_image(images, "640x384", *IMAGENET)
    assert out.shape == (3, 384, 640, 3)
    assert_bitwise(out, np.stack([image for image, _ in expected]))
    assert_bitwise(to_original, np.stack([factor for _, factor in expected]))


def test_preprocess_keeps_static_output_shape_in_a_graph():
    graph = tf.function(lambda x: preprocess_image(x, (16, 32), *LITE))
    batch = graph.get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.uint8)).structured_outputs
    single = graph.get_concrete_function(
        tf.TensorSpec([None, None, 3], tf.uint8)).structured_outputs
    assert batch[0].shape.as_list() == [None, 16, 32, 3]
    assert single[0].shape.as_list() == [16, 32, 3]


def test_sliver_image_keeps_one_row():
    """1 x 1000 into 512: int(1 * 0.512) is 0, which tf.image.resize
    rejects; the resized size is kept at 1 pixel instead."""
    image = np.full((1, 1000, 3), 200, np.uint8)
    geometry = scale_geometry(tf.constant([1, 1000]), (512, 512))
    np.testing.assert_array_equal(geometry.scaled_size, [1, 512])
    out, to_original = preprocess_image(image, 512, *LITE)
    assert float(to_original) == np.float32(1.0) / (np.float32(512) /
                                                    np.float32(1000))
    assert np.all(out[0, :512] == (200.0 - 127.0) / 128.0)
    assert not np.any(out[1:])


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_eval_geometry_has_no_offset_and_the_fitting_scale(size):
    h, w = size
    geometry = scale_geometry(tf.constant(size), (384, 640))
    scale = min(np.float32(384) / np.float32(h), np.float32(640) / np.float32(w))
    assert_bitwise(geometry.scale, scale)
    np.testing.assert_array_equal(geometry.offset, [0, 0])
    np.testing.assert_array_equal(
        geometry.scaled_size,
        [int(np.float32(h) * scale), int(np.float32(w) * scale)])


def test_jittered_geometry_crops_inside_the_resized_image():
    # 300x400 into 128x96 with jitter 1.5: target 192x144, scale
    # min(192/300, 144/400) = 0.36, resized 108x144, free (0, 48),
    # crop at (int(0.5 * 0), int(0.25 * 48)) = (0, 12).
    geometry = scale_geometry(tf.constant([300, 400]), (128, 96),
                              tf.constant(1.5), tf.constant([0.5, 0.25]))
    assert_bitwise(geometry.scale, np.float32(144) / np.float32(400))
    np.testing.assert_array_equal(geometry.scaled_size, [108, 144])
    np.testing.assert_array_equal(geometry.offset, [0, 12])


@pytest.mark.parametrize("jitter, crop", [(1.0, (0.0, 0.0)),
                                          (1.7, (0.3, 0.9)),
                                          (0.6, (0.5, 0.5))])
def test_resize_crop_pad_batch_equals_per_image(jitter, crop):
    rng = np.random.default_rng(7)
    images = rng.uniform(-2.0, 2.0, (3, 45, 70, 5)).astype(np.float32)
    geometry = scale_geometry(tf.constant([45, 70]), (40, 64),
                              tf.constant(jitter), tf.constant(crop))
    batch = resize_crop_pad(images, geometry, (40, 64))
    assert batch.shape == (3, 40, 64, 5)
    for image, out in zip(images, batch, strict=True):
        assert_bitwise(out, resize_crop_pad(image, geometry, (40, 64)).numpy())
