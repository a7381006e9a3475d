"""Run an exported SavedModel (or a checkpoint, in process) over image files.

Files are read and decoded here first, with the same ``tf.io.decode_image``
the graph uses, so a corrupt or non-image file is reported and skipped before
it can fail a whole batch; the model then gets the *encoded* bytes through
``serving_bytes``, which lets one batch mix image sizes. A model exported with
a fixed batch size gets its last batch padded (with repeats of the last
image, whose extra results are dropped).

Outputs: drawn images (labelled with the export's ``label_map.yaml``), one
JSON of every detection at or above ``min_score_thresh``, optionally COCO
results JSON (``[{image_id, category_id, bbox: [x, y, w, h], score}]``).
``min_score_thresh`` and ``max_boxes_to_draw`` apply here, not in the graph.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple, Protocol, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from efficientdet_tf.config import Config
from efficientdet_tf.serving.export import (METADATA_DIR, OUTPUT_KEYS,
                                            SERVING_BYTES, SERVING_DEFAULT,
                                            ServingGraph, load_frozen_graph,
                                            read_metadata)
from efficientdet_tf.utils.boxes import coco_bbox
from efficientdet_tf.utils.files import IMAGE_EXTENSIONS, atomic_path, atomic_write
from efficientdet_tf.utils.profiling import Latency
from efficientdet_tf.utils.progress import CountProgress
from efficientdet_tf.utils.visualize import class_name, draw_detections
from efficientdet_tf.errors import EfficientDetError

DETECTIONS_JSON = "detections.json"
_JPEG_QUALITY = 95


class InferenceError(EfficientDetError, ValueError):
    """Inference that cannot start as asked; the message says why."""


def list_images(spec: str) -> list[str]:
    """The image files named by ``spec``: a folder (its image files, not
    recursive), a ``.txt`` file (one path per line, relative to the list's
    folder; blank lines and ``#`` comments skipped), or a glob pattern."""
    if os.path.isdir(spec):
        files = [os.path.join(spec, name) for name in sorted(os.listdir(spec))
                 if name.lower().endswith(IMAGE_EXTENSIONS)]
    elif spec.endswith(".txt") and os.path.isfile(spec):
        base = os.path.dirname(spec)
        with open(spec, encoding="utf-8") as f:
            files = [os.path.join(base, line.strip()) for line in f
                     if line.strip() and not line.lstrip().startswith("#")]
    else:
        files = sorted(glob.glob(spec))
    if not files:
        raise InferenceError(f"--input_image {spec} names no image file")
    return files


class DecodedImage(NamedTuple):
    """One input file: its bytes and its RGB pixels ``[h, w, 3]`` uint8.
    Files are decoded once, on the host, to catch bad ones; each runtime
    then takes whichever form it runs on."""
    data: bytes
    pixels: np.ndarray


class ImageDetector(Protocol):
    """Decoded image files -> the export contract's output arrays."""
    batch_size: int | None  # fixed batch of the model, None when dynamic
    label_map: dict[int, str]

    def detect(self, images: Sequence[DecodedImage]) -> dict[str, np.ndarray]:
        ...

    def images_function(self) -> Callable[[Any], dict[str, Any]]:
        """uint8 ``[B, h, w, 3]`` -> the output tensors (for benchmarks)."""
        ...


class SavedModelDetector:
    """An export of :func:`efficientdet_tf.serving.export.export_saved_model`,
    fed encoded bytes (``serving_bytes``), so one batch may mix sizes."""

    def __init__(self, export_dir: str):
        if not os.path.isdir(export_dir):
            raise InferenceError(f"no SavedModel directory at {export_dir}")
        self.config, self.label_map = read_metadata(export_dir)
        self.loaded = tf.saved_model.load(export_dir)
        self.signatures = self.loaded.signatures
        spec = self.signatures[SERVING_BYTES].structured_input_signature[1]
        self.batch_size = spec["image_bytes"].shape[0]

    def detect(self, images: Sequence[DecodedImage]) -> dict[str, np.ndarray]:
        outputs = self.signatures[SERVING_BYTES](
            image_bytes=tf.constant([image.data for image in images]))
        return {k: outputs[k].numpy() for k in OUTPUT_KEYS}

    def images_function(self) -> Callable[[Any], dict[str, Any]]:
        return self.signatures[SERVING_DEFAULT]


class FrozenGraphDetector:
    """A frozen ``serving_default`` (``<model_name>_frozen.pb``). It takes
    pixels of one size per call, so images go through it one at a time
    (repeated to the graph's batch when that is fixed)."""

    batch_size = None  # run_inference need not pad: images go one by one

    def __init__(self, path: str, config: Config, label_map: dict[int, str]):
        if not os.path.isfile(path):
            raise InferenceError(f"no frozen graph file at {path}")
        self.config, self.label_map = config, label_map
        self.function, self.graph_batch = load_frozen_graph(path)

    def detect(self, images: Sequence[DecodedImage]) -> dict[str, np.ndarray]:
        rows = []
        for image in images:
            batch = np.repeat(image.pixels[None], self.graph_batch or 1, axis=0)
            outputs = self.function(batch)
            rows.append({k: outputs[k].numpy()[:1] for k in OUTPUT_KEYS})
        return {k: np.concatenate([row[k] for row in rows]) for k in OUTPUT_KEYS}

    def images_function(self) -> Callable[[Any], dict[str, Any]]:
        return self.function


class GraphDetector:
    """The serving functions of an in-memory model (``--runmode=infer``):
    the same computation as its export, without writing one."""

    def __init__(self, serving: ServingGraph):
        self.config, self.batch_size = serving.config, serving.batch_size
        self.label_map = dict(serving.config.label_map or {})
        self.functions = serving.functions()

    def detect(self, images: Sequence[DecodedImage]) -> dict[str, np.ndarray]:
        outputs = self.functions[SERVING_BYTES](
            tf.constant([image.data for image in images]))
        return {k: outputs[k].numpy() for k in OUTPUT_KEYS}

    def images_function(self) -> Callable[[Any], dict[str, Any]]:
        return self.functions[SERVING_DEFAULT]


def open_export(path: str, config: Config | None = None
                ) -> SavedModelDetector | FrozenGraphDetector:
    """The detector of an export: a SavedModel directory, or a frozen
    ``.pb`` (automl users pass ``<dir>/<model_name>_frozen.pb``). A frozen
    graph carries no config: it comes from the SavedModel directory around
    it (the export writes both), else from ``config``."""
    if not path.endswith(".pb"):
        return SavedModelDetector(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(os.path.join(folder, METADATA_DIR)):
        return FrozenGraphDetector(path, *read_metadata(folder))
    if config is None:
        raise InferenceError(f"{path} has no {METADATA_DIR}/ beside it; give "
                             "the config it was exported with (--model_name, "
                             "--hparams)")
    return FrozenGraphDetector(path, config, dict(config.label_map or {}))


@dataclasses.dataclass
class ImageDetections:
    """One image's detections at or above the score threshold."""
    file: str
    height: int
    width: int
    boxes: list[list[float]]  # ymin, xmin, ymax, xmax pixels
    scores: list[float]
    classes: list[int]
    names: list[str]


@dataclasses.dataclass
class InferenceSummary:
    """What :func:`run_inference` did."""
    results: list[ImageDetections]
    failed: list[tuple[str, str]]  # (file, reason)
    seconds: float
    json_path: str | None = None

    def text(self) -> str:
        line = (f"{len(self.results)} image(s) processed, {len(self.failed)} "
                f"skipped in {self.seconds:.1f} s")
        if self.json_path:
            line += f"; detections in {self.json_path}"
        return "\n".join([line] + [f"  skipped {f}: {r}"
                                   for f, r in self.failed])


def _decode(path: str) -> DecodedImage:
    """File bytes and RGB pixels; raises ValueError with a short reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f"cannot read ({err.strerror})") from None
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        raise ValueError("corrupt or not a JPEG/PNG/BMP/GIF image") from None
    return DecodedImage(data, image.numpy())


def run_inference(detector: ImageDetector, files: Sequence[str], *,
                  batch_size: int = 1, output_image_dir: str | None = None,
                  min_score_thresh: float = 0.4, max_boxes_to_draw: int = 100,
                  output_json: str | None = None,
                  coco_results_json: str | None = None,
                  progress: CountProgress | None = None) -> InferenceSummary:
    """Detects objects in ``files`` and writes the outputs asked for.

    ``output_json`` defaults to ``detections.json`` in ``output_image_dir``.
    Progress goes to stderr by default: stdout is for the results.
    """
    batch_size = detector.batch_size or batch_size
    if batch_size < 1:
        raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    if output_image_dir:
        os.makedirs(output_image_dir, exist_ok=True)
        output_json = output_json or os.path.join(output_image_dir,
                                                  DETECTIONS_JSON)
    progress = progress or CountProgress(len(files), sys.stderr)
    start = time.perf_counter()
    results: list[ImageDetections] = []
    failed: list[tuple[str, str]] = []
    names = _output_names(files)
    pending: list[tuple[str, DecodedImage]] = []

    def flush() -> None:
        padded = [image for _, image in pending]
        if detector.batch_size:
            padded += [padded[-1]] * (detector.batch_size - len(padded))
        outputs = detector.detect(padded)
        for i, (path, image) in enumerate(pending):
            result = _select(path, image.pixels.shape, outputs, i,
                             min_score_thresh, detector.label_map)
            results.append(result)
            if output_image_dir:
                _write_drawn(image.pixels, result, detector.label_map,
                             max_boxes_to_draw,
                             os.path.join(output_image_dir, names[path]))
        pending.clear()

    for done, path in enumerate(files, 1):
        try:
            pending.append((path, _decode(path)))
        except ValueError as err:
            failed.append((path, str(err)))
        if len(pending) == batch_size or (done == len(files) and pending):
            flush()
        progress.update(done)
    summary = InferenceSummary(results, failed, time.perf_counter() - start,
                               output_json)
    if output_json:
        _write_json(output_json, {
            "min_score_thresh": min_score_thresh,
            "images": [dataclasses.asdict(r) for r in results],
            "failed": [{"file": f, "error": e} for f, e in failed]})
    if coco_results_json:
        _write_json(coco_results_json, coco_results(results))
    return summary


def _select(path: str, shape: tuple[int, ...], outputs: dict[str, np.ndarray],
            index: int, min_score: float,
            label_map: dict[int, str]) -> ImageDetections:
    count = int(outputs["num_detections"][index])
    scores = outputs["detection_scores"][index, :count]
    keep = scores >= min_score
    boxes = outputs["detection_boxes"][index, :count][keep]
    classes = outputs["detection_classes"][index, :count][keep].astype(int)
    return ImageDetections(
        path, int(shape[0]), int(shape[1]),
        [[round(float(v), 2) for v in box] for box in boxes],
        [round(float(s), 5) for s in scores[keep]], classes.tolist(),
        [class_name(c, label_map) for c in classes])


def _output_names(files: Sequence[str]) -> dict[str, str]:
    """A distinct output file name per input: the base name (JPEG stays
    JPEG, anything else becomes PNG), numbered when two inputs share one."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for path in files:
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext.lower() if ext.lower() in (".jpg", ".jpeg") else ".png"
        name, n = stem + ext, 1
        while name in taken:
            name, n = f"{stem}_{n}{ext}", n + 1
        taken.add(name)
        names[path] = name
    return names


def _write_drawn(image: np.ndarray, result: ImageDetections,
                 label_map: dict[int, str], max_boxes: int, path: str) -> None:
    drawn = draw_detections(image, result.boxes, result.classes, result.scores,
                            label_map=label_map, max_boxes=max_boxes)
    is_jpeg = path.lower().endswith((".jpg", ".jpeg"))
    with atomic_path(path) as temp:
        Image.fromarray(drawn).save(
            temp, format="JPEG" if is_jpeg else "PNG",
            **({"quality": _JPEG_QUALITY} if is_jpeg else {}))


def _write_json(path: str, value: Any) -> None:
    atomic_write(path, json.dumps(value, indent=1))


def coco_image_id(path: str, default: int) -> int:
    """COCO's id from a COCO file name (``000000397133.jpg``,
    ``COCO_val2014_000000397133.jpg``: the last digit group), else
    ``default``."""
    digits = re.findall(r"\d+", os.path.splitext(os.path.basename(path))[0])
    return int(digits[-1]) if digits else default


def coco_results(results: Iterable[ImageDetections]) -> list[dict[str, Any]]:
    """Detections in the COCO results format (bbox ``[x, y, width,
    height]``), as ``pycocotools``' ``loadRes`` reads them."""
    rows = []
    for index, result in enumerate(results, 1):
        image_id = coco_image_id(result.file, index)
        for (ymin, xmin, ymax, xmax), score, cls in zip(
                result.boxes, result.scores, result.classes):
            rows.append({"image_id": image_id, "category_id": int(cls),
                         "bbox": [round(v, 2) for v in
                                  coco_bbox(xmin, ymin, xmax, ymax)],
                         "score": score})
    return rows


def time_calls(call: Callable[[], Any], batch_size: int, runs: int = 50,
               warmup: int = 5) -> Latency:
    """Times ``call`` (which must return host values, e.g. ``.numpy()``, so
    the clock stops after the work) ``runs`` times after ``warmup`` calls
    (tracing, oneDNN primitive caches)."""
    if runs < 1 or warmup < 0:
        raise InferenceError(f"need runs >= 1 and warmup >= 0, got {runs} "
                             f"and {warmup}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(1000.0 * (time.perf_counter() - start))
    return Latency(batch_size, tuple(times))


def benchmark_serving(function: Callable[..., dict[str, tf.Tensor]],
                      image_size: tuple[int, int], batch_size: int = 1,
                      runs: int = 50, warmup: int = 5) -> Latency:
    """End-to-end latency (pre-processing, network, NMS) of a
    ``serving_default`` function on one fixed random uint8 batch."""
    images = tf.constant(np.random.default_rng(0).integers(
        0, 256, (batch_size, *image_size, 3), dtype=np.uint8))

    def call() -> None:
        function(images=images)["num_detections"].numpy()
    return time_calls(call, batch_size, runs, warmup)
