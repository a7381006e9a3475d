"""Decode + NMS: hand-made cases, TF's own NMS, graph/batch invariance, TFLite,
and the official detections of the D0 fixture (preprocessing included)."""
from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.ops.anchors import anchor_boxes
from efficientdet_tf.config import get_config
from efficientdet_tf.ops.postprocess import (Detections, NmsSettings, batched_nms,
                                         greedy_nms, postprocess,
                                         select_candidates)
from efficientdet_tf.ops.preprocess import preprocess_image

BENCHMARK = (pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
             / "postprocess.py")
SOFT = NmsSettings.from_config({"method": "gaussian"})
HARD = NmsSettings.from_config({"method": "hard"})


def small_config(**nms_configs):
    """D0 at 128x128 with 6 classes: 3,069 anchors over levels 3..7."""
    return get_config("efficientdet-d0", {"image_size": 128, "num_classes": 6,
                                          "nms_configs": nms_configs})


def load_benchmark():
    spec = importlib.util.spec_from_file_location("postprocess_benchmark",
                                                  BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_head_outputs(config, batch: int, seed: int):
    """Per-level numpy (class outputs, box outputs), logits ~ N(-3, 2)."""
    outputs = load_benchmark().head_outputs(config, batch, -3.0, 2.0, seed)
    levels = config.max_level - config.min_level + 1
    return outputs[:levels], outputs[levels:]


def random_boxes(rng, count: int, extent: float = 100.0):
    corner = rng.uniform(0, extent, (count, 2))
    size = rng.uniform(5, 40, (count, 2))
    return np.concatenate([corner, corner + size], 1).astype(np.float32)


def nms_one(boxes, scores, classes, settings, **kwargs) -> Detections:
    """batched_nms on one image given as unbatched numpy arrays."""
    return batched_nms(np.asarray(boxes, np.float32)[None],
                       np.asarray(scores, np.float32)[None],
                       np.asarray(classes, np.int32)[None], settings, **kwargs)


def assert_same(a: Detections, b: Detections) -> None:
    for name, x, y in zip(Detections._fields, a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


# --- settings ----------------------------------------------------------------

def test_official_defaults():
    assert (SOFT.iou_thresh, SOFT.score_thresh, SOFT.sigma) == (1.0, 0.001, 0.5)
    assert (HARD.iou_thresh, HARD.score_thresh, HARD.sigma) == (0.5, -math.inf, 0.0)
    assert SOFT.max_output_size == 100 and SOFT.per_class
    # automl's own default score_thresh is 0.0, which it reads as "unset".
    assert NmsSettings.from_config({"method": "gaussian", "score_thresh": 0.0}) == SOFT
    assert NmsSettings.from_config({"method": None}).method == "hard"
    explicit = NmsSettings.from_config({"method": "gaussian", "sigma": 0.3,
                                        "score_thresh": 0.2, "iou_thresh": 0.6})
    # soft-NMS never removes by IoU, whatever iou_thresh says (as automl).
    assert (explicit.sigma, explicit.score_thresh, explicit.iou_thresh) == (0.3, 0.2, 1.0)
    assert NmsSettings.from_config(small_config().nms_configs) == SOFT


@pytest.mark.parametrize("key, value", [("method", "linear"),
                                        ("max_output_size", 0),
                                        ("max_nms_inputs", -1), ("sigma", -1.0)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"nms_configs.{key}"):
        NmsSettings.from_config({"method": "gaussian", key: value})


# --- NMS on hand-made boxes --------------------------------------------------

# A and B overlap with IoU 1/3; C overlaps B only (IoU 1/3); D is A's copy.
HAND_BOXES = [[0, 0, 10, 10], [0, 5, 10, 15], [0, 10, 10, 20], [0, 0, 10, 10]]


def test_gaussian_decay_matches_formula():
    scores = [0.9, 0.8, 0.7, 0.004]
    det = nms_one(HAND_BOXES, scores, [0, 0, 0, 0], SOFT)
    decay = math.exp(-(1 / 3) ** 2 / 0.5)
    # A kept; B decays by A; C is then best (0.7 > 0.8 * decay = 0.64) and is
    # decayed by nothing selected before it; B, last, decays by C as well.
    # D (IoU 1 with A) falls to 0.004 * e^-2 = 0.00054 <= 0.001: dropped.
    expected = [0.9, 0.7, 0.8 * decay * decay]
    assert int(det.num_detections[0]) == 3
    np.testing.assert_allclose(det.scores[0, :3], expected, rtol=1e-6)
    np.testing.assert_array_equal(det.boxes[0, :3],
                                  [HAND_BOXES[0], HAND_BOXES[2], HAND_BOXES[1]])
    np.testing.assert_array_equal(det.classes[0, :3], [1, 1, 1])
    # Padding rows are all zero.
    assert not np.any(det.boxes[0, 3:]) and not np.any(det.scores[0, 3:])
    assert not np.any(det.classes[0, 3:])


def test_hard_nms_threshold_and_classes():
    det = nms_one(HAND_BOXES, [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], HARD)
    # IoU 1/3 < 0.5 keeps A, B, C; D (IoU 1 with A) goes.
    assert int(det.num_detections[0]) == 3
    np.testing.assert_allclose(det.scores[0, :3], [0.9, 0.8, 0.7])
    tight = NmsSettings.from_config({"method": "hard", "iou_thresh": 0.3})
    det = nms_one(HAND_BOXES, [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], tight)
    np.testing.assert_allclose(det.scores[0, :2], [0.9, 0.7])  # B goes too


def test_class_agnostic_switch():
    boxes, scores = HAND_BOXES[:2] + [HAND_BOXES[0]], [0.9, 0.8, 0.7]
    classes = [0, 0, 4]
    per_class = nms_one(boxes, scores, classes, HARD)
    # The copy of A is class 5: per-class NMS keeps it.
    np.testing.assert_array_equal(per_class.classes[0, :3], [1, 1, 5])
    agnostic = NmsSettings.from_config({"method": "hard", "per_class": False})
    det = nms_one(boxes, scores, classes, agnostic, image_size=(8, 12))
    np.testing.assert_array_equal(det.classes[0, :3], [1, 1, 0])
    assert int(det.num_detections[0]) == 2
    # The global mode clips to the network input, as automl.
    np.testing.assert_array_equal(det.boxes[0, :2], [[0, 0, 8, 10], [0, 5, 8, 12]])
    with pytest.raises(ValueError, match="image_size"):
        nms_one(boxes, scores, classes, agnostic)


def per_class_reference(boxes, scores, classes, size, tf_nms):
    """Per-class ``tf_nms(boxes, scores) -> (indices, scores)``, then the best
    ``size`` of the union (automl's per_class_nms)."""
    found = []
    for cls in np.unique(classes):
        index = np.flatnonzero(classes == cls)
        selected, kept = tf_nms(boxes[index], scores[index])
        found += [(float(s), int(cls) + 1, tuple(boxes[index[i]]))
                  for i, s in zip(np.asarray(selected), np.asarray(kept))]
    return sorted(found, key=lambda item: -item[0])[:size]


def as_rows(det: Detections):
    count = int(det.num_detections[0])
    return [(float(s), int(c), tuple(b)) for s, c, b in
            zip(det.scores[0, :count].numpy(), det.classes[0, :count].numpy(),
                det.boxes[0, :count].numpy())]


@pytest.mark.parametrize("size", [20, 200])
def test_hard_nms_equals_tf_non_max_suppression_per_class(size):
    rng = np.random.default_rng(1)
    boxes, scores = random_boxes(rng, 400), rng.uniform(0, 1, 400).astype(np.float32)
    classes = rng.integers(0, 7, 400)
    settings = NmsSettings.from_config({"method": "hard", "max_output_size": size})

    def tf_hard(b, s):
        index = tf.image.non_max_suppression(b, s, size, iou_threshold=0.5)
        return index, tf.gather(s, index)
    expected = per_class_reference(boxes, scores, classes, size, tf_hard)
    assert len(expected) == size  # enough survive to fill the output
    assert as_rows(nms_one(boxes, scores, classes, settings)) == expected


def test_soft_nms_equals_tf_soft_nms_per_class():
    rng = np.random.default_rng(2)
    boxes, scores = random_boxes(rng, 400), rng.uniform(0, 1, 400).astype(np.float32)
    classes = rng.integers(0, 7, 400)

    def tf_soft(b, s):  # TF's sigma convention is half the paper's.
        return tf.image.non_max_suppression_with_scores(
            b, s, 100, score_threshold=0.001, soft_nms_sigma=0.25)
    expected = per_class_reference(boxes, scores, classes, 100, tf_soft)
    ours = as_rows(nms_one(boxes, scores, classes, SOFT))
    assert len(ours) == len(expected) == 100
    for (s1, c1, b1), (s2, c2, b2) in zip(ours, expected):
        assert (c1, b1) == (c2, b2) and s1 == pytest.approx(s2, rel=1e-5)


@pytest.mark.parametrize("nms", [
    {"method": "gaussian"}, {"method": "gaussian", "sigma": 0.1},
    {"method": "gaussian", "score_thresh": 0.3, "max_output_size": 300},
    {"method": "hard", "iou_thresh": 0.4}, {"method": "hard", "iou_thresh": 0.7}])
def test_greedy_nms_selects_what_tf_kernel_selects(nms):
    """The portable loop (ONNX's soft-NMS) against NonMaxSuppressionV5 on
    crowded boxes, including degenerate ones, scores ending the run early
    (score_thresh 0.3) and the hard-NMS special case of sigma 0."""
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 600, extent=60.0)
    boxes[:5, 2:] = boxes[:5, :2]  # zero area: IoU 0 with everything
    boxes[5:10] = boxes[5:10, [2, 3, 0, 1]]  # corners given the other way round
    scores = rng.uniform(0, 1, 600).astype(np.float32)
    settings = NmsSettings.from_config(nms)
    index, kept, count = greedy_nms(tf.constant(boxes), tf.constant(scores),
                                    settings)
    want_index, want_kept, want_count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes, scores=scores, max_output_size=settings.max_output_size,
        iou_threshold=settings.iou_thresh, score_threshold=settings.score_thresh,
        soft_nms_sigma=settings.sigma / 2, pad_to_max_output_size=True)
    assert int(count) == int(want_count) > 10
    n = int(count)
    np.testing.assert_array_equal(index[:n], want_index[:n])
    np.testing.assert_allclose(kept[:n], want_kept[:n], rtol=1e-5)
    assert not np.any(kept[n:]) and not np.any(index[n:])


def test_portable_postprocess_equals_the_kernel():
    config = small_config(method="gaussian")
    classes, boxes = random_head_outputs(config, 2, seed=8)
    kernel = postprocess(classes, boxes, config)
    portable = postprocess(classes, boxes, config, portable=True)
    assert np.min(kernel.num_detections) > 0
    for name, a, b in zip(Detections._fields, kernel, portable, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


# --- candidates ----------------------------------------------------------------

def test_candidates_argmax_and_flattened_top_k():
    config = small_config()
    classes, boxes = random_head_outputs(config, 2, seed=3)
    anchors = anchor_boxes(config)
    # Head-output order (location, then anchor; class innermost) = anchor order.
    logits = np.concatenate([c.reshape(2, -1, 6) for c in classes], 1)
    codes = np.concatenate([b.reshape(2, -1, 4) for b in boxes], 1)
    assert logits.shape == (2, len(anchors), 6)
    every = select_candidates(classes, boxes, anchors, 6)
    np.testing.assert_array_equal(every.classes, np.argmax(logits, -1))
    np.testing.assert_array_equal(every.logits, np.max(logits, -1))
    np.testing.assert_array_equal(every.codes, codes)
    np.testing.assert_array_equal(every.anchors, anchors)

    top = select_candidates(classes, boxes, anchors, 6, max_nms_inputs=500)
    assert top.codes.shape == top.anchors.shape == (2, 500, 4)
    flat = logits.reshape(2, -1)
    for image in range(2):  # automl: one top-k over all (anchor, class) pairs
        best = np.argsort(-flat[image], kind="stable")[:500]
        rows = best // 6
        want = sorted(zip(flat[image, best], best % 6,
                          map(tuple, codes[image, rows]), map(tuple, anchors[rows])))
        got = sorted(zip(*(np.asarray(x[image]) for x in top[:2]),
                         *(map(tuple, np.asarray(x[image])) for x in top[2:])))
        assert got == want


# --- whole post-processing: graph, batch, scale, TFLite --------------------------

@pytest.mark.parametrize("nms", [{"method": "gaussian"}, {"method": "hard"},
                                 {"per_class": False}, {"max_nms_inputs": 1000}])
def test_eager_graph_and_batch_agree(nms):
    config = small_config(**nms)
    classes, boxes = random_head_outputs(config, 2, seed=4)
    scales = np.array([1.5, 0.75], np.float32)
    specs = [tf.TensorSpec((None,) + x.shape[1:]) for x in classes + boxes]

    @tf.function(input_signature=specs + [tf.TensorSpec([None])])
    def graph(*args):  # dynamic batch: the tf.map_fn path
        return postprocess(list(args[:5]), list(args[5:10]), config, args[10])

    def eager(*args):  # static batch: unrolled
        return postprocess(list(args[:5]), list(args[5:10]), config, args[10])

    both = {run: run(*classes, *boxes, scales) for run in (eager, graph)}
    # Batched equals image by image, to the bit, in either mode.
    for run, batched in both.items():
        for i in range(2):
            alone = run(*(x[i:i + 1] for x in classes + boxes), scales[i:i + 1])
            assert_same(alone, Detections(*(x[i:i + 1] for x in batched)))
    # Eager equals graph: same detections in the same order. Grappler's
    # arithmetic optimizer re-associates the additions of the box decoding,
    # so coordinates (and, through IoUs, soft-NMS scores) may move by an ulp.
    ours, traced = both[eager], both[graph]
    np.testing.assert_array_equal(ours.classes, traced.classes)
    np.testing.assert_array_equal(ours.num_detections, traced.num_detections)
    np.testing.assert_allclose(ours.boxes, traced.boxes, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(ours.scores, traced.scores, rtol=1e-5)
    assert ours.boxes.shape == (2, 100, 4) and ours.classes.dtype == tf.int32
    assert not np.array_equal(ours.boxes[0], ours.boxes[1])
    unscaled = postprocess([c[:1] for c in classes], [b[:1] for b in boxes], config)
    np.testing.assert_array_equal(unscaled.boxes * 1.5, ours.boxes[:1])


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("nms", [{"method": "gaussian"}, {"method": "hard"},
                                 {"per_class": False}, {"max_nms_inputs": 1000}])
def test_converts_to_tflite_builtins(nms):
    config = small_config(**nms)
    classes, boxes = random_head_outputs(config, 1, seed=5)
    specs = [tf.TensorSpec(x.shape) for x in classes + boxes]

    @tf.function(input_signature=specs)
    def detect(*args):
        return tuple(postprocess(list(args[:5]), list(args[5:]), config, 2.0))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [detect.get_concrete_function()], detect)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["index"])
    for detail, value in zip(inputs, classes + boxes, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    # Outputs are Identity, Identity_1, ... in the function's output order.
    outputs = [interpreter.get_tensor(d["index"]) for d in sorted(
        interpreter.get_output_details(), key=lambda d: d["name"])]
    expected = detect(*classes, *boxes)
    assert int(expected[3][0]) > 0
    for name, ours, lite in zip(Detections._fields, expected, outputs,
                                strict=True):
        np.testing.assert_allclose(lite, ours, rtol=1e-5, atol=1e-4, err_msg=name)


def test_benchmark_runs_and_rejects_bad_flags(capsys):
    benchmark = load_benchmark()
    assert benchmark.main(["--image_size", "128", "--runs", "1", "--warmup", "0",
                           "--batch_sizes", "1,2", "--batch_dims", "static,dynamic",
                           "--class_loop"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * 2 * 3 and "ms/image" in lines[-1]
    assert benchmark.main(["--methods", "linear"]) == 2
    assert "--methods" in capsys.readouterr().err


# --- preprocessing ---------------------------------------------------------------

def test_preprocess_resizes_keeping_aspect_and_pads():
    image = np.full((30, 40, 3), 200, np.uint8)
    out, scale = preprocess_image(image, "32x16", 100.0, 50.0)  # W 32, H 16
    assert out.shape == (16, 32, 3) and float(scale) == pytest.approx(30 / 16)
    # min(16/30, 32/40) = 0.533: 30x40 -> 16x21, padded right with zeros.
    np.testing.assert_allclose(out[:, :21], 2.0)
    assert not np.any(out[:, 21:])
    graph = tf.function(lambda x: preprocess_image(x, (16, 32), 100.0, 50.0),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    batch, scales = graph(np.stack([image, image]))
    np.testing.assert_array_equal(batch[1], out)
    np.testing.assert_array_equal(scales, [scale, scale])


# --- fidelity: official detections of the D0 fixture ---------------------------

@pytest.fixture(scope="module")
def fixture_outputs(fixtures_dir: pathlib.Path):
    """Our network at the fixture checkpoint (EMA) on ``image.npy``: config,
    head outputs and the scale back to the 300x400 image."""
    from efficientdet_tf.modeling.checkpoint import load_weights
    from efficientdet_tf.modeling.model import build_model
    folder = fixtures_dir / "automl_d0_256x256"
    meta = json.loads((folder / "meta.json").read_text())
    config = get_config("efficientdet-d0", {"image_size": 256})
    keras.backend.clear_session()
    model = build_model(config)
    load_weights(model, folder / "ckpt" / "model", use_ema=True)
    image, scale = preprocess_image(np.load(folder / "image.npy"), 256,
                                    meta["mean_rgb"], meta["stddev_rgb"])
    classes, boxes = model(image[None], training=False)
    return folder, config, classes, boxes, scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[len(a), len(b)]`` of yxyx boxes."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), -1)
    area_a = np.prod(a[:, 2:] - a[:, :2], -1)
    area_b = np.prod(b[:, 2:] - b[:, :2], -1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@pytest.mark.parametrize("mode", ["per_class", "global"])
def test_reproduces_official_detections(fixture_outputs, mode):
    folder, config, classes, boxes, scale = fixture_outputs
    config = config.override({"nms_configs": {"per_class": mode == "per_class"}})
    ours = postprocess(classes, boxes, config, scale[None])
    official = np.load(folder / f"detections_{mode}_ema.npz")
    assert int(ours.num_detections[0]) == int(official["valid"][0])
    keep = official["scores"][0] >= 0.05
    assert keep.sum() > 50
    iou = box_iou(official["boxes"][0][keep], ours.boxes[0].numpy())
    same_class = official["classes"][0][keep, None] == ours.classes[0].numpy()[None]
    close = np.abs(official["scores"][0][keep, None] -
                   ours.scores[0].numpy()[None]) <= 1e-3
    matched = np.any(same_class & close & (iou >= 0.99), axis=1)
    assert matched.all(), f"{(~matched).sum()} official detections unmatched"
