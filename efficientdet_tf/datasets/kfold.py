"""K-fold cross-validation: records split into folds stratified by class.

A user with one annotated set (no separate validation set, as on Kaggle)
trains K models, each on K-1 folds, evaluates each on the fold it did not
see, and ensembles them. The split must keep every class in every fold: a
fold that holds none of a rare class cannot measure it, and one holding
most of it leaves too few to learn from.

:func:`scan_records` reads each record's source id (as the input pipeline
reports it, so ``regenerate_source_id`` is honoured) and class ids, not its
image; :func:`assign_folds` stratifies the images, all records of a source
id going to its fold. ``split_kfold.py`` then copies each record into its
fold's file (:func:`write_fold_files`), while ``main.py --fold=k
--num_folds=K`` reads the records through :func:`fold_filter` (a
:class:`Fold`), which drops the other side's as they are read.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import (RecordFilter, list_record_files,
                                           source_id_of)
from efficientdet_tf.data.tfrecord import CLASS_LABEL_KEY, IMAGE_ID_FEATURES
from efficientdet_tf.datasets.record_check import SCAN_BATCH, tf_error_reason
from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.utils.files import atomic_path, atomic_write

FOLDS_FILE = "folds.json"
_ID_FEATURES = {key: IMAGE_ID_FEATURES[key]
                for key in ("image/filename", "image/source_id")}
_SCAN_FEATURES = {**_ID_FEATURES,
                  CLASS_LABEL_KEY: tf.io.VarLenFeature(tf.int64)}


class KFoldError(EfficientDetError):
    """A split that cannot be made or used; the message says why."""


@dataclasses.dataclass(frozen=True)
class ImageClasses:
    """One image of the records: its source id, the class id of each of its
    boxes, and how many records carry that source id (the first one's boxes
    are those kept)."""
    source_id: str
    classes: tuple[int, ...]
    records: int = 1


@dataclasses.dataclass(frozen=True)
class FoldSummary:
    """What one fold holds: images, records (more when source ids repeat)
    and boxes per class id."""
    fold: int
    images: int
    records: int
    boxes: Mapping[int, int]


def _text(source_id: bytes) -> str:
    """Text that turns back into the same bytes, UTF-8 or not, so that
    :func:`fold_filter` finds every record of the split."""
    return source_id.decode("utf-8", "surrogateescape")


def _source_ids(features: Mapping[str, tf.Tensor], config: Config) -> tf.Tensor:
    return source_id_of({"filename": features["image/filename"],
                         "source_id": features["image/source_id"]}, config)


def _batches(path: str, parse: Callable[[tf.Tensor], Any]) -> Iterator[Any]:
    """``parse`` applied to batches of ``path``'s serialized records, as
    NumPy; a record that cannot be read or parsed is a :class:`KFoldError`
    naming the file and its index."""
    dataset = (tf.data.TFRecordDataset(path).batch(SCAN_BATCH).map(parse)
               .prefetch(1))
    try:
        yield from dataset.as_numpy_iterator()
    except tf.errors.OpError as err:
        raise KFoldError(_bad_record(path, err)) from None


def _bad_record(path: str, err: tf.errors.OpError) -> str:
    """Which record of ``path`` a batch failed on. Only called on a bad
    file, so going one record at a time costs nothing."""
    index = 0
    try:
        for record in tf.data.TFRecordDataset(path):
            tf.io.parse_single_example(record, _SCAN_FEATURES)
            index += 1
    except tf.errors.OpError as found:
        err = found
    return (f"{path}: record index {index} cannot be read as a "
            f"tf.train.Example of this schema ({tf_error_reason(err)}); "
            "re-run the converter that wrote it")


def scan_records(file_pattern: str, config: Config) -> list[ImageClasses]:
    """Every image of the records, in record order (files sorted): one
    pass that parses ids and class ids only, never the images.

    Records repeating a source id count once, as the evaluation counts
    them; their number is each image's ``records``.
    """
    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        features = tf.io.parse_example(serialized, _SCAN_FEATURES)
        labels = tf.RaggedTensor.from_sparse(features[CLASS_LABEL_KEY])
        return (_source_ids(features, config), labels.values,
                labels.row_lengths())

    images: dict[str, ImageClasses] = {}
    for path in list_record_files(file_pattern):
        for ids, values, lengths in _batches(path, parse):
            for source_id, classes in zip(
                    ids, np.split(values, np.cumsum(lengths)[:-1])):
                key = _text(source_id)
                seen = images.get(key)
                images[key] = (
                    dataclasses.replace(seen, records=seen.records + 1) if seen
                    else ImageClasses(key, tuple(classes.tolist())))
    return list(images.values())


def assign_folds(images: Sequence[ImageClasses], num_folds: int,
                 seed: int = 0) -> dict[str, int]:
    """Source id -> fold in ``0..num_folds-1``, stratified by class.

    An iterative stratification after Sechidis et al. 2011 ("On the
    stratification of multi-label data"): the images are taken in order of
    their rarest class (fewest images), so the rare classes are dealt out
    while every fold can still take them, and each goes to the fold that
    most lacks that class. Every fold's target is 1/K of each class, so
    "most lacks" is "holds fewest"; ties go to the fold holding fewest of
    the image's other classes (rarest first), then fewest images, then a
    seeded draw. Images without boxes come last, each to a fold with fewest
    images; last, images move from the largest fold to the smallest where
    that leaves their classes as even (:meth:`_Deal.even_sizes`).

    The result depends on the images and ``seed`` only: they are sorted by
    source id before the seeded shuffle that orders equals.
    """
    ids = [image.source_id for image in images]
    if len(set(ids)) != len(ids):
        repeated = next(i for i, n in collections.Counter(ids).items() if n > 1)
        raise KFoldError(f"source id {repeated!r} appears more than once; "
                         "give each image once (scan_records does)")
    if not 2 <= num_folds <= len(images):
        raise KFoldError(f"{num_folds} folds of {len(images)} images: the "
                         "number of folds must be at least 2 and at most "
                         "the number of images")
    if seed < 0:
        raise KFoldError(f"the seed of a split must be 0 or more, got {seed}")
    rng = np.random.default_rng(seed)
    ordered = sorted(images, key=lambda image: image.source_id)
    ordered = [ordered[i] for i in rng.permutation(len(ordered))]
    frequency = collections.Counter(c for image in ordered
                                    for c in set(image.classes))

    def rarest_first(image: ImageClasses) -> list[int]:
        return sorted(set(image.classes), key=lambda c: (frequency[c], c))

    # Within a rarest class, the images of more classes first: they are
    # the hardest to place, and those of fewer fill the gaps they leave.
    labelled = sorted((image for image in ordered if image.classes),
                      key=lambda image: (min((frequency[c], c)
                                             for c in image.classes),
                                         -len(set(image.classes))))
    deal = _Deal(num_folds, frequency)
    for image in labelled + [image for image in ordered if not image.classes]:
        classes = rarest_first(image)
        draw = rng.random(num_folds)
        deal.place(image.source_id, classes, min(range(num_folds), key=lambda f: (
            [deal.counts[c][f] for c in classes], deal.sizes[f], draw[f])))
    deal.even_sizes()
    return deal.assignment


class _Deal:
    """Folds being dealt: images per class and per fold, and the source
    id -> fold map so far."""

    def __init__(self, num_folds: int, classes: Iterable[int]) -> None:
        self.counts = {c: [0] * num_folds for c in classes}
        self.sizes = [0] * num_folds
        self.assignment: dict[str, int] = {}
        self.classes: dict[str, list[int]] = {}

    def place(self, source_id: str, classes: list[int], fold: int) -> None:
        """Puts (or moves) an image into ``fold``."""
        self.classes[source_id] = classes
        if source_id in self.assignment:
            self._count(source_id, -1)
        self.assignment[source_id] = fold
        self._count(source_id, 1)

    def _count(self, source_id: str, step: int) -> None:
        fold = self.assignment[source_id]
        self.sizes[fold] += step
        for c in self.classes[source_id]:
            self.counts[c][fold] += step

    def even_sizes(self) -> None:
        """Moves images, fewest classes first, from the largest fold to the
        smallest while each of their classes stays as even as it was (or
        within one image): dealt class by class, sizes can end a few apart.
        """
        movable = sorted(self.assignment, key=lambda s: len(self.classes[s]))
        while max(self.sizes) - min(self.sizes) > 1:
            big, small = (self.sizes.index(max(self.sizes)),
                          self.sizes.index(min(self.sizes)))

            def keeps_balance(source_id: str) -> bool:
                for n in (self.counts[c] for c in self.classes[source_id]):
                    after = [v - (f == big) + (f == small) for f, v in enumerate(n)]
                    if max(after) - min(after) > max(max(n) - min(n), 1):
                        return False
                return True
            source_id = next((s for s in movable if self.assignment[s] == big
                              and keeps_balance(s)), None)
            if source_id is None:
                return
            self.place(source_id, self.classes[source_id], small)


def fold_report(images: Sequence[ImageClasses], assignment: Mapping[str, int],
                num_folds: int) -> list[FoldSummary]:
    """Images, records and boxes per class of each fold."""
    boxes = [collections.Counter() for _ in range(num_folds)]
    counts = np.zeros((num_folds, 2), np.int64)  # images, records
    for image in images:
        counts[assignment[image.source_id]] += (1, image.records)
        boxes[assignment[image.source_id]].update(image.classes)
    return [FoldSummary(k, *counts[k].tolist(), dict(sorted(boxes[k].items())))
            for k in range(num_folds)]


def format_report(report: Sequence[FoldSummary],
                  label_map: Mapping[int, str] | None) -> str:
    """The report as a table: a row of images (and of records, when source
    ids repeat), then one of boxes per class id (with its label_map name),
    a column per fold and the total."""
    names = label_map or {}
    classes = sorted({c for fold in report for c in fold.boxes})
    rows = [("images", [fold.images for fold in report])]
    if any(fold.records != fold.images for fold in report):
        rows.append(("records", [fold.records for fold in report]))
    rows += [(f"{c} {names.get(c, '')}".strip(),
              [fold.boxes.get(c, 0) for fold in report]) for c in classes]
    lines = ["images and boxes per class in each fold:",
             f"  {'':<20}" + "".join(f"{'fold ' + str(f.fold):>9}"
                                     for f in report) + f"{'all':>9}"]
    lines += [f"  {label[:20]:<20}" + "".join(f"{n:>9}" for n in row)
              + f"{sum(row):>9}" for label, row in rows]
    return "\n".join(lines)


def folds_json(assignment: Mapping[str, int], report: Sequence[FoldSummary],
               seed: int, **extra: Any) -> dict[str, Any]:
    """What ``folds.json`` holds: the split's settings (and ``extra``), the
    report, and the source id -> fold map."""
    return {"num_folds": len(report), "seed": seed, **extra,
            "duplicate_records": sum(f.records - f.images for f in report),
            "folds": [dataclasses.asdict(f) for f in report],
            "assignment": dict(sorted(assignment.items()))}


def write_json(path: str, data: Mapping[str, Any]) -> str:
    atomic_write(path, json.dumps(data, indent=1) + "\n")
    return path


def write_fold_files(file_pattern: str, config: Config,
                     assignment: Mapping[str, int], num_folds: int,
                     output_dir: str) -> list[str]:
    """Copies each record, byte for byte, into ``fold-k-of-K.tfrecord`` of
    its fold in ``output_dir``; returns the files. None appears unless all
    are complete."""
    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_example(serialized, _ID_FEATURES)
        return serialized, _source_ids(features, config)

    paths = [os.path.join(output_dir, f"fold-{k}-of-{num_folds}.tfrecord")
             for k in range(num_folds)]
    with contextlib.ExitStack() as files:
        writers = [files.enter_context(tf.io.TFRecordWriter(
            files.enter_context(atomic_path(p)))) for p in paths]
        for path in list_record_files(file_pattern):
            for records, ids in _batches(path, parse):
                for record, source_id in zip(records, ids):
                    fold = assignment.get(_text(source_id))
                    if fold is None:
                        raise KFoldError(
                            f"{path}: source id {_text(source_id)!r} is not "
                            "in the split (did the records change while "
                            "being split?)")
                    writers[fold].write(record)
    return paths


def fold_filter(assignment: Mapping[str, int], fold: int, config: Config, *,
                held_out: bool) -> RecordFilter:
    """A predicate on serialized records for ``build_dataset(keep=...)``:
    true for the records of ``fold`` (``held_out``) or of the other folds.

    It parses the two id features only, so the records dropped cost no
    image decoding; source ids missing from ``assignment`` are on neither
    side. The lookup table is a tf.data-friendly resource: a checkpointed
    iterator resumes through it.
    """
    keys = sorted(assignment)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant([k.encode("utf-8", "surrogateescape") for k in keys],
                    tf.string),
        tf.constant([assignment[k] for k in keys], tf.int64)), default_value=-1)

    def keep(serialized: tf.Tensor) -> tf.Tensor:
        folds = table.lookup(_source_ids(
            tf.io.parse_single_example(serialized, _ID_FEATURES), config))
        in_fold = tf.equal(folds, fold)
        return tf.logical_and(folds >= 0, in_fold if held_out
                              else tf.logical_not(in_fold))
    return keep


@dataclasses.dataclass(frozen=True)
class Fold:
    """Fold ``index`` of a K-fold split of a run's training records: its
    records are evaluated, the other folds' are trained on."""
    index: int
    seed: int
    config: Config
    assignment: Mapping[str, int]
    report: tuple[FoldSummary, ...]

    @property
    def num_folds(self) -> int:
        return len(self.report)

    @property
    def training_records(self) -> int:
        """Records read per training epoch (the other folds')."""
        return sum(f.records for f in self.report if f.fold != self.index)

    def keep(self, *, held_out: bool) -> RecordFilter:
        """:func:`fold_filter` of this fold (a new table per call: one per
        dataset built)."""
        return fold_filter(self.assignment, self.index, self.config,
                           held_out=held_out)

    def summary(self, folds_path: str) -> str:
        held_out = self.report[self.index].images
        training = sum(f.images for f in self.report) - held_out
        return (f"fold {self.index} of {self.num_folds}: training on "
                f"{training} images, evaluating on {held_out} ({FOLDS_FILE} "
                f"in {os.path.dirname(folds_path) or '.'})")


def held_out_fold(file_pattern: str, config: Config, fold: int,
                  num_folds: int, seed: int = 0) -> Fold:
    """Fold ``fold`` of :func:`assign_folds` over ``file_pattern``'s
    records; the same ``seed`` gives the split ``split_kfold.py`` writes."""
    if not 0 <= fold < num_folds:
        raise KFoldError(f"fold {fold} does not exist: the folds of "
                         f"num_folds={num_folds} are 0..{num_folds - 1}")
    images = scan_records(file_pattern, config)
    assignment = assign_folds(images, num_folds, seed)
    return Fold(fold, seed, config, assignment,
                tuple(fold_report(images, assignment, num_folds)))


def record_fold(fold: Fold, model_dir: str) -> str:
    """Writes the split into ``model_dir/folds.json``, or checks the one a
    previous run of this ``model_dir`` wrote: resuming with another fold,
    seed or changed records would evaluate on images it trained on."""
    path = os.path.join(model_dir, FOLDS_FILE)
    data = folds_json(fold.assignment, fold.report, fold.seed, fold=fold.index)
    if not os.path.exists(path):
        return write_json(path, data)
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    if any(previous.get(key) != data[key] for key in ("fold", "num_folds", "seed")):
        raise KFoldError(
            f"{path}: {model_dir} holds fold {previous.get('fold')} of "
            f"{previous.get('num_folds')} (fold seed {previous.get('seed')}), "
            f"not fold {fold.index} of {fold.num_folds} (fold seed "
            f"{fold.seed}); give its flags to continue it, or choose a new "
            "--model_dir")
    if previous.get("assignment") != data["assignment"]:
        raise KFoldError(f"{path}: the training records changed since "
                         f"{model_dir} split them (its held-out images would "
                         "differ); choose a new --model_dir")
    return path
