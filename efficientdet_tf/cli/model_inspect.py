"""Inspect, convert and export EfficientDet models from the command line.

A thin CLI: it parses flags and dispatches ``--runmode`` to a library
function, so everything it does is testable from ``efficientdet_tf``.

  python model_inspect.py --runmode=convert_ckpt --model_name=efficientdet-d0 \\
      --ckpt_path=efficientdet-d0/ --model_dir=/tmp/d0_native
  python model_inspect.py --runmode=saved_model --model_name=efficientdet-d0 \\
      --ckpt_path=efficientdet-d0/ --saved_model_dir=/tmp/d0_export
  python model_inspect.py --runmode=saved_model_infer \\
      --saved_model_dir=/tmp/d0_export --input_image='photos/*.jpg' \\
      --output_image_dir=/tmp/out --min_score_thresh=0.4
  python model_inspect.py --runmode=tflite --ckpt_path=efficientdet-d0/ \\
      --output_dir=/tmp/tflite --tflite=fp32,int8 \\
      --representative_data='data/val-*.tfrecord'
  python model_inspect.py --runmode=eval_saved_model \\
      --saved_model_dir=/tmp/tflite/efficientdet-d0_int8.tflite \\
      --validation_file_pattern='data/val-*.tfrecord' \\
      --val_json_file=data/val.json --output_dir=/tmp/int8_eval
  python model_inspect.py --runmode=ensemble_infer \\
      --saved_model_dir=/tmp/fold0,/tmp/fold1,/tmp/fold2 --tta=flip \\
      --input_image='photos/*.jpg' --output_image_dir=/tmp/out
  python model_inspect.py --runmode=saved_model_infer --tile_size=512 \\
      --saved_model_dir=/tmp/d0_export --input_image=aerial/ \\
      --output_image_dir=/tmp/tiled

Models come from --model_name + --hparams (a config.yaml written by an
export or convert_ckpt works) + --ckpt_path (EMA weights when present).
Installed with pip, this is the ``efficientdet-inspect`` command.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from efficientdet_tf.cli.command import Parser, UsageError, positive_int, run
from efficientdet_tf.cli.fusion_flags import (add_fusion_flags, fused_predictor,
                                              fusion_options, open_models)

if TYPE_CHECKING:  # TensorFlow is imported only when a runmode runs
    import keras

    from efficientdet_tf.config import Config
    from efficientdet_tf.fusion.fused import FusedDetector
    from efficientdet_tf.serving.inference import ImageDetector
    from efficientdet_tf.serving.predictors import LoadedModel

PROG = "model_inspect.py"


def convert_ckpt(flags: argparse.Namespace) -> None:
    """Official (or native) checkpoint -> native checkpoint + config.yaml."""
    from efficientdet_tf.modeling.checkpoint import convert_checkpoint
    from efficientdet_tf.utils.files import CONFIG_FILE
    prefix, report = convert_checkpoint(flags.model_name, flags.ckpt_path,
                                        flags.model_dir, flags.hparams)
    print(report.summary())
    print(f"wrote {prefix} and {os.path.join(flags.model_dir, CONFIG_FILE)}")


def _model(flags: argparse.Namespace) -> tuple[keras.Model, Config]:
    """The flags' model, saying which weights it got (random ones are
    legitimate for dry runs and benchmarks, so they are only announced)."""
    from efficientdet_tf.serving.export import load_model
    model, config, report = load_model(flags.model_name, flags.ckpt_path,
                                       flags.hparams)
    if report:
        print(report.summary())
    else:
        print("no --ckpt_path: random weights")
    return model, config


def saved_model(flags: argparse.Namespace) -> None:
    """Checkpoint -> SavedModel (serving_default, serving_bytes, predict)."""
    from efficientdet_tf.serving.export import export_saved_model, frozen_graph_name
    model, config = _model(flags)
    path = export_saved_model(model, config, flags.saved_model_dir,
                              flags.batch_size)
    print(f"wrote SavedModel {path} (batch "
          f"{flags.batch_size or 'dynamic'}; config.yaml and label_map.yaml "
          f"in assets.extra/; frozen graph {frozen_graph_name(config)})")


def _infer(flags: argparse.Namespace, detector: ImageDetector | FusedDetector
           ) -> None:
    from efficientdet_tf.serving.inference import list_images, run_inference
    summary = run_inference(
        detector, list_images(flags.input_image),
        batch_size=flags.batch_size or 1,
        output_image_dir=flags.output_image_dir,
        min_score_thresh=flags.min_score_thresh,
        max_boxes_to_draw=flags.max_boxes_to_draw,
        output_json=flags.output_json,
        coco_results_json=flags.coco_results_json)
    print(summary.text())


def _exported(flags: argparse.Namespace) -> ImageDetector:
    """The detector of --saved_model_dir (a SavedModel, or a frozen .pb
    whose config, without a SavedModel around it, is --model_name and
    --hparams)."""
    from efficientdet_tf.config import get_config
    from efficientdet_tf.serving.inference import open_export
    return open_export(flags.saved_model_dir,
                       get_config(flags.model_name, flags.hparams))


def _flags_config(flags: argparse.Namespace) -> Callable[[], Config]:
    """The config of a model file that carries none: the flags'."""
    from efficientdet_tf.config import get_config
    return lambda: get_config(flags.model_name, flags.hparams)


def _fused(flags: argparse.Namespace, models: list[LoadedModel]
           ) -> FusedDetector:
    from efficientdet_tf.fusion.fused import FusedDetector
    return FusedDetector(fused_predictor(models, flags))


def saved_model_infer(flags: argparse.Namespace) -> None:
    """Exported SavedModel (or frozen graph) over --input_image; with TTA or
    tiles, image by image through the fusion."""
    if fusion_options(flags).plain:
        _infer(flags, _exported(flags))
    else:
        _infer(flags, _fused(flags, open_models(flags, _flags_config(flags))))


def ensemble_infer(flags: argparse.Namespace) -> None:
    """Several models (SavedModels, exports, model_dirs) over
    --input_image, their detections merged."""
    models = open_models(flags, _flags_config(flags))
    if len(models) < 2:
        raise UsageError("--runmode=ensemble_infer needs two or more models: "
                         "--saved_model_dir=a,b[,c...]")
    _infer(flags, _fused(flags, models))


def eval_saved_model(flags: argparse.Namespace) -> None:
    """COCO metrics and the evaluation report of exports (SavedModel,
    frozen .pb, .tflite, .onnx) or model_dirs on --validation_file_pattern;
    several are evaluated as their ensemble, with TTA and tiles as asked."""
    from efficientdet_tf.evaluation.evaluate_export import evaluate_predictor
    models = open_models(flags, _flags_config(flags))
    name = ("+".join(os.path.basename(os.path.normpath(m.path))
                     for m in models))
    evaluate_predictor(fused_predictor(models, flags), name,
                       flags.validation_file_pattern, models[0].config,
                       val_json_file=flags.val_json_file,
                       max_images=flags.eval_samples,
                       output_dir=flags.output_dir)


def infer(flags: argparse.Namespace) -> None:
    """Checkpoint over --input_image, in process (no export); with TTA or
    tiles, image by image through the fusion."""
    from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
    from efficientdet_tf.serving.inference import GraphDetector
    from efficientdet_tf.serving.predictors import LoadedModel, images_predictor
    model, config = _model(flags)
    serving = ServingGraph(model, config)
    if fusion_options(flags).plain:
        _infer(flags, GraphDetector(serving))
        return
    run = images_predictor(serving.functions()[SERVING_DEFAULT], None)
    _infer(flags, _fused(flags, [LoadedModel(
        flags.ckpt_path, run, config, dict(config.label_map or {}))]))


def freeze(flags: argparse.Namespace) -> None:
    """Checkpoint -> frozen GraphDef of serving_default."""
    from efficientdet_tf.serving.export import freeze_graph, frozen_graph_name
    model, config = _model(flags)
    frozen = freeze_graph(model, config, os.path.join(
        flags.output_dir, frozen_graph_name(config)), flags.batch_size)
    print(f"wrote {frozen.path}\n  inputs: {frozen.inputs}\n  outputs: "
          f"{frozen.outputs}")


def tflite(flags: argparse.Namespace) -> None:
    """Checkpoint -> .tflite files (fp32 / fp16 / int8)."""
    from efficientdet_tf.serving.tflite_export import check_request, export_tflite
    quantizations = [q.strip().lower() for q in flags.tflite.split(",")
                     if q.strip()]
    check_request(quantizations, flags.representative_data)
    model, config = _model(flags)
    written = export_tflite(model, config, flags.output_dir, quantizations,
                            flags.representative_data,
                            flags.num_calibration_steps, flags.batch_size or 1)
    height, width = config.image_size
    for quantization, path in written.items():
        print(f"wrote {path} (input uint8 [{flags.batch_size or 1}, {height}, "
              f"{width}, 3], letterboxed)")


def onnx(flags: argparse.Namespace) -> None:
    """Checkpoint -> .onnx (NMS included), checked with onnxruntime."""
    import numpy as np

    from efficientdet_tf.serving.onnx_export import OnnxDetector, export_onnx
    model, config = _model(flags)
    path = export_onnx(model, config, os.path.join(
        flags.output_dir, f"{config.name}.onnx"), flags.batch_size,
        flags.opset)
    count = OnnxDetector(path).detect(np.zeros(
        (flags.batch_size or 1, *config.image_size, 3), np.uint8))[
            "num_detections"]
    print(f"wrote {path} (onnxruntime ran it: {count.tolist()} detections "
          "on a black image)")


def saved_model_benchmark(flags: argparse.Namespace) -> None:
    """End-to-end latency of an exported SavedModel (or frozen graph)."""
    detector = _exported(flags)
    _benchmark(flags, detector.images_function(), detector.config)


def benchmark(flags: argparse.Namespace) -> None:
    """End-to-end latency of a checkpoint's serving function, in process."""
    from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
    model, config = _model(flags)
    _benchmark(flags, ServingGraph(model, config).functions()[SERVING_DEFAULT],
               config)


def _benchmark(flags: argparse.Namespace, function: Callable[..., Any],
               config: Config) -> None:
    from efficientdet_tf.serving.inference import benchmark_serving
    stats = benchmark_serving(function, config.image_size,
                              flags.batch_size or 1, flags.bm_runs,
                              flags.warmup_runs)
    height, width = config.image_size
    print(f"{config.name} end-to-end on {height}x{width} uint8 images: "
          f"{stats.text()}")


def dry(flags: argparse.Namespace) -> None:
    """Build, one end-to-end forward pass, parameters and FLOPs, and what
    pyramid levels other than the preset's add."""
    import numpy as np

    from efficientdet_tf.modeling.cost import levels_cost, network_cost
    from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
    model, config = _model(flags)
    outputs = ServingGraph(model, config).functions()[SERVING_DEFAULT](
        np.zeros((1, *config.image_size, 3), np.uint8))
    print(f"{config.name} {config.image_size[0]}x{config.image_size[1]}: "
          f"forward pass ok, detection_boxes "
          f"{tuple(outputs['detection_boxes'].shape)}")
    cost = network_cost(model)
    print(cost.text())
    levels = levels_cost(config, cost)
    if levels:
        print(levels.text())


class Runmode(NamedTuple):
    run: Callable[[argparse.Namespace], None]
    required: tuple[str, ...]  # flags that must be given


RUNMODES: dict[str, Runmode] = {
    "convert_ckpt": Runmode(convert_ckpt, ("ckpt_path", "model_dir")),
    "saved_model": Runmode(saved_model, ("ckpt_path", "saved_model_dir")),
    "saved_model_infer": Runmode(saved_model_infer, (
        "saved_model_dir", "input_image", "output_image_dir")),
    "ensemble_infer": Runmode(ensemble_infer, (
        "saved_model_dir", "input_image", "output_image_dir")),
    "infer": Runmode(infer, ("ckpt_path", "input_image", "output_image_dir")),
    "freeze": Runmode(freeze, ("ckpt_path", "output_dir")),
    "tflite": Runmode(tflite, ("ckpt_path", "output_dir")),
    "onnx": Runmode(onnx, ("ckpt_path", "output_dir")),
    "eval_saved_model": Runmode(eval_saved_model, (
        "saved_model_dir", "validation_file_pattern")),
    "saved_model_benchmark": Runmode(saved_model_benchmark,
                                     ("saved_model_dir",)),
    "benchmark": Runmode(benchmark, ()),
    "dry": Runmode(dry, ()),
}


def build_parser() -> Parser:
    """automl's model_inspect.py flags, with the same names and meanings."""
    parser = Parser(PROG, __doc__)
    parser.add_argument("--runmode", required=True, choices=sorted(RUNMODES),
                        help="what to do. convert_ckpt: official automl "
                        "checkpoint (EMA weights) -> native checkpoint plus "
                        "config.yaml in --model_dir. saved_model: export a "
                        "SavedModel to --saved_model_dir. saved_model_infer / "
                        "infer: detect objects in --input_image with a "
                        "SavedModel / a checkpoint (with --tta, --tile_size "
                        "as asked). ensemble_infer: the same with several "
                        "models merged (--saved_model_dir=a,b,c). freeze, "
                        "tflite, onnx: "
                        "write those formats to --output_dir. "
                        "eval_saved_model: COCO metrics, plots and error "
                        "gallery of an export (SavedModel, .pb, .tflite, "
                        ".onnx), a model_dir, or several merged, on "
                        "--validation_file_pattern. "
                        "saved_model_benchmark / benchmark: end-to-end "
                        "latency. dry: build, one forward pass, parameters "
                        "and FLOPs (and, for levels other than the "
                        "preset's, e.g. min_level=2, what they add)")
    parser.add_argument("--model_name", default="efficientdet-d0",
                        help="model preset, efficientdet-d0..d7x or "
                        "efficientdet-lite0..4 (default %(default)s)")
    parser.add_argument("--ckpt_path", help="checkpoint prefix, or a "
                        "directory holding one (e.g. an extracted automl "
                        "archive)")
    parser.add_argument("--model_dir", help="output directory for "
                        "convert_ckpt (created if missing)")
    parser.add_argument("--hparams", default="", help="config overrides: a "
                        "YAML file or 'a=1,b.c=2'; image_size strings are "
                        "automl's WIDTHxHEIGHT")
    parser.add_argument("--saved_model_dir", help="the SavedModel directory "
                        "(written by saved_model, with <model_name>_frozen.pb "
                        "inside; read by saved_model_infer and "
                        "saved_model_benchmark, which also take that .pb; "
                        "eval_saved_model also takes a .tflite, .onnx or a "
                        "training model_dir; ensemble_infer and "
                        "eval_saved_model take several, comma-separated)")
    parser.add_argument("--output_dir", help="where freeze, tflite and onnx "
                        "write <model_name>_frozen.pb, <model_name>_<type>"
                        ".tflite and <model_name>.onnx; eval_saved_model its "
                        "metrics, plots and tables")
    parser.add_argument("--validation_file_pattern", help="eval_saved_model: "
                        "the validation TFRecords (glob, quote it)")
    parser.add_argument("--val_json_file", help="eval_saved_model: COCO "
                        "ground truth (default: the records' boxes)")
    parser.add_argument("--eval_samples", type=positive_int, default=None,
                        help="eval_saved_model: only the first this many "
                        "images (default: all)")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="export: fix the batch size (default: dynamic; "
                        "tflite: 1). infer: images per batch (default 1). "
                        "benchmark: images per timed batch (default 1)")
    parser.add_argument("--input_image", help="images to detect objects in: "
                        "a glob ('photos/*.jpg', quote it), a folder, or a "
                        ".txt file listing one path per line")
    parser.add_argument("--output_image_dir", help="where infer modes write "
                        "the images with drawn boxes and detections.json")
    parser.add_argument("--output_json", help="detections JSON path "
                        "(default: <output_image_dir>/detections.json)")
    parser.add_argument("--coco_results_json", help="also write detections "
                        "in COCO results format (image_id from the file "
                        "name's last digit group)")
    parser.add_argument("--min_score_thresh", type=float, default=0.4,
                        help="infer modes: draw and list only detections "
                        "scoring at least this (default %(default)s); the "
                        "exported graph itself returns all of them")
    parser.add_argument("--max_boxes_to_draw", type=positive_int,
                        default=100, help="at most this many boxes drawn "
                        "per image, best first (default %(default)s)")
    parser.add_argument("--tflite", default="fp32", help="comma-separated "
                        "TFLite types: fp32, fp16, int8 (default "
                        "%(default)s)")
    parser.add_argument("--representative_data", help="int8 calibration "
                        "images: a TFRecord pattern, an image folder, glob "
                        "or .txt list")
    parser.add_argument("--num_calibration_steps", type=positive_int,
                        default=100, help="int8: calibration batches "
                        "(default %(default)s)")
    parser.add_argument("--opset", type=positive_int, default=17,
                        help="ONNX opset (default %(default)s)")
    add_fusion_flags(parser)
    parser.add_argument("--bm_runs", type=positive_int, default=50,
                        help="benchmark: timed runs (default %(default)s)")
    parser.add_argument("--warmup_runs", type=int, default=5,
                        help="benchmark: untimed runs first (default "
                        "%(default)s)")
    return parser


def _inspect(flags: argparse.Namespace) -> None:
    """Runs ``--runmode`` once the flags it needs are there."""
    runmode = RUNMODES[flags.runmode]
    absent = [f"--{n}" for n in runmode.required if not getattr(flags, n)]
    if absent:
        raise UsageError(f"--runmode={flags.runmode} needs {', '.join(absent)}")
    runmode.run(flags)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``--runmode`` the flags ask for; returns the exit status."""
    return run(build_parser(), _inspect, argv)
