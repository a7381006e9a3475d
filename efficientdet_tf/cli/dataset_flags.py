"""Flag sets shared by the dataset commands (the
converters, inspector and generator).

What the dataset commands have in common (the bad-annotation policy flags,
the output flags, the two VOC layouts) is defined here once so that the
commands cannot drift apart. Nothing here imports TensorFlow: ``--help`` and
flag errors stay instant.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from efficientdet_tf.cli.command import UsageError
from efficientdet_tf.datasets.annotations import Options

if TYPE_CHECKING:
    from efficientdet_tf.datasets.voc import VocSource

# What a Ctrl-C leaves of a conversion: shards and JSON are written whole.
NOTHING_KEPT = "no partial output was kept"


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for what to do with unwanted or bad annotations."""
    parser.add_argument(
        "--skip_empty", action="store_true",
        help="drop images that have no objects (after the checks); by default "
        "they are kept as negatives")
    parser.add_argument(
        "--skip_unknown_classes", action="store_true",
        help="drop objects whose class is not in the label map (counted in the "
        "summary); by default such an object is an error naming the file and "
        "the object")
    parser.add_argument(
        "--duplicates", choices=("error", "skip"), default="error",
        help="what to do when two entries name the same image file "
        "(case-insensitive): 'error' stops and names both, 'skip' keeps the "
        "first and counts the rest (default %(default)s)")


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup
                     ) -> None:
    """``--model_name`` and ``--hparams``, for the commands that read the
    data under the config the user trains with (resolved as main.py does)."""
    parser.add_argument("--model_name", default="efficientdet-d0",
                        help="model preset (default %(default)s)")
    parser.add_argument("--hparams", default="",
                        help="the config overrides you train with, as "
                        "main.py takes them: YAML files and 'a=1,b.c=2' "
                        "items joined by commas")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num_shards", type=int, default=1,
        help="number of output files, {prefix}-00000-of-0000N.tfrecord "
        "(default %(default)s); record k goes to shard k %% N")
    parser.add_argument(
        "--num_threads", type=int, default=None,
        help="threads that decode and re-encode images (default: the number "
        "of CPU cores, at most 8); the output does not depend on it")


def options_from(flags: argparse.Namespace) -> Options:
    return Options(skip_empty=flags.skip_empty,
                   skip_unknown_classes=flags.skip_unknown_classes,
                   ignore_difficult=getattr(flags, "ignore_difficult_instances",
                                            False),
                   duplicates=flags.duplicates)


def add_voc_flags(parser: argparse.ArgumentParser) -> None:
    """The two VOC layouts, the label map and the difficult flag."""
    devkit = parser.add_argument_group(
        "VOC devkit layout", "reads {data_dir}/{year}/ImageSets/Main/{set}.txt, "
        "Annotations/{id}.xml and JPEGImages/")
    devkit.add_argument("--data_dir", help="the VOCdevkit folder (holding "
                        "VOC2007/, VOC2012/)")
    devkit.add_argument("--year", default="VOC2007",
                        help="VOC2007, VOC2012 (or 2007, 2012), or 'merged' "
                        "for both (default %(default)s)")
    devkit.add_argument("--set", dest="split", default="train",
                        help="image list in ImageSets/Main: train, val, "
                        "trainval or test (default %(default)s)")
    folder = parser.add_argument_group(
        "LabelImg folder layout", "every *.xml in a folder, images found by "
        "the XML's <filename> (else by the XML's own name)")
    folder.add_argument("--annotations_dir", help="folder of XML files "
                        "(used instead of --data_dir)")
    folder.add_argument("--image_dir", help="folder of the images (default: "
                        "--annotations_dir, where LabelImg saves the XML)")
    parser.add_argument(
        "--label_map_json_path", default=None,
        help="JSON or YAML label map, {1: person, 2: car} or {person: 1, "
        "car: 2} (an hparams file with a label_map key works too); without it "
        "the ids are 1..K for the sorted class names found")
    parser.add_argument(
        "--ignore_difficult_instances", action="store_true",
        help="drop objects marked <difficult>1</difficult> (counted); by "
        "default they are kept with image/object/difficult = 1")


def voc_source_from(flags: argparse.Namespace) -> VocSource:
    """The annotations the flags of :func:`add_voc_flags` point at."""
    from efficientdet_tf.datasets.voc import VocSource
    if bool(flags.data_dir) == bool(flags.annotations_dir):
        raise UsageError("give either --data_dir (VOC devkit) or "
                         "--annotations_dir (folder of XML files)")
    return VocSource(data_dir=flags.data_dir, year=flags.year,
                     split=flags.split, annotations_dir=flags.annotations_dir,
                     image_dir=flags.image_dir)
