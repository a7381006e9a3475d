"""Check a dataset against the config you will train with (the dataset doctor).

  python dataset/analyze_dataset.py --coco_json=data/train/annotations.json \\
      --model_name=efficientdet-d0 --hparams=my.yaml --output_dir=doctor

  python dataset/analyze_dataset.py \\
      --file_pattern='tfrecord/train-*.tfrecord' --hparams=my.yaml \\
      --output_dir=doctor --fit_anchors

Reads TFRecords (decoded as training decodes them), a COCO JSON or a folder
of VOC / LabelImg XML (sizes from the annotations: no image is decoded), and
reports under the config (--model_name, --hparams, parsed as main.py does):
images, objects per image (and images above max_instances_per_image), empty
images, boxes per class with their ids and label_map names; ERRORS for class
ids outside 1..num_classes or missing from label_map and for label_map
entries without a name, naming the files; box sizes and aspect ratios at the
model's input scale; the share of boxes whose best anchor reaches IoU 0.5,
per class and per COCO size, listing the boxes no anchor matches; and a
one-line verdict. --output_dir gets report.json and PNG plots (these need
matplotlib: pip install 'efficientdet_tf[plots]'). --fit_anchors fits aspect
ratios and anchor_scale to the boxes and writes anchors.yaml, to add to
--hparams. The exit status is 1 when the data has errors, so scripts can
gate on it.
Installed with pip, this is the ``efficientdet-analyze-dataset`` command.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

from efficientdet_tf.cli import dataset_flags
from efficientdet_tf.cli.command import Parser, UsageError, positive_int, run

if TYPE_CHECKING:
    from efficientdet_tf.datasets.doctor_sources import BoxTable

PROG = "analyze_dataset.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    data = parser.add_argument_group("the data (give one)")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--file_pattern",
                        help="TFRecords: a glob (quote it) or several joined "
                        "by commas")
    source.add_argument("--coco_json", help="a COCO instances JSON")
    source.add_argument("--voc_dir", help="a folder of VOC / LabelImg XML "
                        "files")
    data.add_argument("--label_map", "--label_map_json_path", dest="label_map",
                      help="--voc_dir: JSON or YAML label map as the "
                      "converters take it ({1: person} or {person: 1}); "
                      "without it the ids are 1..K for the sorted names")
    data.add_argument("--category_id_offset", type=int, default=0,
                      help="--coco_json: added to every category id, as "
                      "create_coco_tfrecord.py does (default %(default)s)")
    data.add_argument("--max_images", type=positive_int,
                      help="read only the first this many images (default: "
                      "all)")
    dataset_flags.add_policy_flags(parser)
    dataset_flags.add_config_flags(parser)
    parser.add_argument("--output_dir",
                        help="folder for report.json, the plots and "
                        "anchors.yaml (nothing is written without it)")
    fit = parser.add_argument_group("anchor fitting")
    fit.add_argument("--fit_anchors", action="store_true",
                     help="fit aspect ratios and anchor_scale to the boxes; "
                     "print the coverage before and after and write "
                     "anchors.yaml")
    fit.add_argument("--num_anchor_ratios", type=positive_int,
                     help="aspect ratios to fit (default: the config's "
                     "count). Changing the anchors per location (ratios x "
                     "scales) re-initialises the heads' last layers when "
                     "fine-tuning from an official checkpoint")
    fit.add_argument("--num_anchor_scales", type=positive_int,
                     help="octave scales per level (default: the config's "
                     "num_scales); same caveat")
    return parser


def _check_flags(flags: argparse.Namespace) -> None:
    if flags.label_map and not flags.voc_dir:
        raise UsageError("--label_map goes with --voc_dir (records and COCO "
                         "JSON carry their class ids)")
    counts = flags.num_anchor_ratios or flags.num_anchor_scales
    if counts and not flags.fit_anchors:
        raise UsageError("--num_anchor_ratios and --num_anchor_scales go "
                         "with --fit_anchors")


def _read(flags: argparse.Namespace) -> BoxTable:
    from efficientdet_tf.datasets import doctor_sources
    options = dataset_flags.options_from(flags)
    if flags.file_pattern:
        return doctor_sources.read_records(flags.file_pattern, flags.max_images)
    if flags.coco_json:
        return doctor_sources.read_coco_json(
            flags.coco_json, options, flags.max_images,
            flags.category_id_offset)
    return doctor_sources.read_voc_dir(flags.voc_dir, flags.label_map, options,
                                       flags.max_images)


def _analyze(flags: argparse.Namespace) -> None:
    """Reports, fits, writes; raises when the data has errors."""
    _check_flags(flags)
    # Imported only now so that --help and flag errors stay instant.
    from efficientdet_tf.datasets import doctor, doctor_fit, doctor_plots
    from efficientdet_tf.training.runner import resolve_config

    config = resolve_config(flags.model_name, flags.hparams, {})
    report = doctor.analyze(_read(flags), config)
    print(report.summary())
    fitted = None
    if flags.fit_anchors:
        fitted = doctor_fit.fit_report_anchors(
            report, flags.num_anchor_ratios, flags.num_anchor_scales)
        anchors = (doctor_fit.write_anchors(fitted, flags.output_dir)
                   if flags.output_dir else None)
        print(fitted.summary(anchors))
    if flags.output_dir:
        fit_json = fitted.to_json() if fitted else None
        path = doctor.write_report(report, flags.output_dir, fit_json)
        print(f"wrote {path}")
        plots = doctor_plots.write_plots(report, flags.output_dir,
                                         fitted.config if fitted else None)
        print(doctor_plots.SKIPPED if plots is None
              else f"plots: {', '.join(plots) or 'none (no boxes)'}")
    print(f"verdict: {report.verdict()}")
    report.raise_for_errors()


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the report (and writes its files); returns the exit status:
    1 when the data has errors."""
    return run(build_parser(), _analyze, argv)
