"""Start-up checks of a run's TFRecords, so a bad dataset stops it before step 1.

Two dataset mistakes otherwise cost a night of training:

* class ids outside ``1..num_classes`` train silently: an id above
  ``num_classes`` has no class channel and an id below 1 lands on the
  background, so those objects are never learned ("0 mAP on my dataset");
* a truncated or corrupted shard (a converter killed mid-write, an
  interrupted copy) fails only when the reader reaches it, deep in the
  training loop, and TensorFlow's error names a byte offset but not the file.

:func:`check_records` reads every record once, parsing only the class-id
feature in batches (the images are skipped, not decoded), and reports the
offending ids or the damaged file with its fix. :func:`naming_damaged_files`
covers a file damaged after that check, while the run reads it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Iterator, Mapping

import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import list_record_files
from efficientdet_tf.data.tfrecord import CLASS_LABEL_KEY
from efficientdet_tf.errors import EfficientDetError

# Records parsed per step of the scan: big enough that tf.data's per-element
# overhead vanishes next to reading the bytes.
SCAN_BATCH = 512
# label_map entries quoted in an error; a 90-class map would bury the point.
SHOWN_LABELS = 10
_CLASS_IDS = {CLASS_LABEL_KEY: tf.io.VarLenFeature(tf.int64)}
# TF's DataLossError text from the TFRecord reader, e.g. "truncated record at
# 1182' failed with Read less bytes than requested".
_DAMAGE = re.compile(r"\b(truncated|corrupted) record at (\d+)")
_TF_WRAPPING = re.compile(r"\{\{.*?\}\}\s*|\s*\[Op:.*$|Error in user-defined "
                          r"function passed to .*? with iterator: \S+ ")


class RecordError(EfficientDetError, ValueError):
    """Records a run cannot use; the message names the file and the fix."""


@dataclasses.dataclass
class _OutOfRange:
    """Class ids outside ``1..num_classes`` seen so far, and where."""
    ids: set[int] = dataclasses.field(default_factory=set)
    records: int = 0
    first: tuple[str, int] | None = None  # (file, record index)


def check_records(file_pattern: str, config: Config, what: str) -> int:
    """Reads every record of ``file_pattern`` once and returns their number.

    Raises :class:`RecordError`, its message starting with ``what`` (e.g.
    ``"training data"``), for a pattern matching no file or only empty
    ones, an unreadable file (named, with the record index and byte offset
    of the damage), or class ids outside ``1..config.num_classes`` (all
    such ids, the first file and record holding one, and the settings to
    change).
    """
    try:
        files = list_record_files(file_pattern)
    except FileNotFoundError as err:
        raise RecordError(f"{what}: {err}") from None
    found = _OutOfRange()
    total = 0
    for path in files:
        try:
            total += _scan_file(path, config.num_classes, found)
        except tf.errors.OpError as err:
            raise RecordError(f"{what}: {_damage_message(path, err)}") from None
    if not total:
        raise RecordError(f"{what}: {file_pattern!r} matches {len(files)} "
                          "file(s) but they hold no records")
    if found.ids:
        raise RecordError(_ids_message(what, found, total, config))
    return total


def _scan_file(path: str, num_classes: int, found: _OutOfRange) -> int:
    """Adds ``path``'s out-of-range ids to ``found``; returns its records."""
    batches = (tf.data.TFRecordDataset(path).batch(SCAN_BATCH)
               .map(_class_ids).prefetch(1))
    seen = 0
    for ids, rows, size in batches.as_numpy_iterator():
        wrong = (ids < 1) | (ids > num_classes)
        if wrong.any():
            found.ids.update(ids[wrong].tolist())
            found.records += len(np.unique(rows[wrong]))
            if found.first is None:
                found.first = (path, seen + int(rows[wrong][0]))
        seen += int(size)
    return seen


def _class_ids(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A batch's class ids, the batch row of each, and the batch size."""
    labels = tf.io.parse_example(serialized, _CLASS_IDS)[CLASS_LABEL_KEY]
    return labels.values, labels.indices[:, 0], tf.size(serialized)


def _ids_message(what: str, found: _OutOfRange, total: int,
                 config: Config) -> str:
    limit = config.num_classes
    ids = ", ".join(str(i) for i in sorted(found.ids))
    path, index = found.first
    below_one, top = min(found.ids) < 1, max(found.ids)
    head = f"{what}: class ids {ids} found, max allowed {limit}"
    fixes = []
    if top > limit:
        fixes.append(f"if those are real classes, set num_classes={top} and a "
                     f"label_map naming ids 1..{top} in --hparams")
    if below_one:
        head += " and ids are 1-based (0 is background)"
        fixes.append("re-convert the records with a label map whose ids "
                     "start at 1")
    else:
        fixes.append("otherwise re-convert the records with the label map "
                     "you meant")
    return (f"{head} (num_classes={limit}, label_map: "
            f"{_describe_label_map(config.label_map)}); {found.records} of "
            f"{total} records hold them, the first is {path} (record index "
            f"{index}). To fix: {'; '.join(fixes)}")


def _describe_label_map(label_map: Mapping[int, str] | None) -> str:
    if not label_map:
        return "none"
    items = sorted(label_map.items())
    shown = ", ".join(f"{i}: {name}" for i, name in items[:SHOWN_LABELS])
    hidden = len(items) - SHOWN_LABELS
    return f"{{{shown}{f', ... {hidden} more' if hidden > 0 else ''}}}"


def _damage_message(path: str, err: tf.errors.OpError) -> str:
    """What is wrong with ``path`` (whose reading raised ``err``), where,
    and how to repair it."""
    reason = tf_error_reason(err)
    match = _DAMAGE.search(reason)
    if not isinstance(err, tf.errors.DataLossError) or match is None:
        return (f"{path}: not a TFRecord file of tf.train.Examples in this "
                f"schema ({reason}); re-run the converter that wrote it")
    kind, offset = match.groups()
    index = _readable_records(path)
    what_happened = ("the file ends inside it, as when a converter is killed "
                     "mid-write or a copy is interrupted" if kind == "truncated"
                     else "its checksum does not match its bytes")
    return (f"{path}: record index {index} (at byte {offset}) is {kind}: "
            f"{what_happened}; re-run the converter (or copy the file again)")


def _readable_records(path: str) -> int:
    """How many records of ``path`` read before the first error. Only
    called on a damaged file, so counting one by one costs nothing."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except tf.errors.OpError:
        pass
    return count


def tf_error_reason(err: tf.errors.OpError) -> str:
    """The first line of a TF error without the wrapping that locates the
    op (``{{function_node ...}}``, ``[Op:...]``, the tf.data stage) around
    the actual reason."""
    lines = (err.message or str(err)).splitlines() or [""]
    return _TF_WRAPPING.sub("", lines[0]).strip()


@contextlib.contextmanager
def naming_damaged_files(file_patterns: Mapping[str, str]) -> Iterator[None]:
    """Names the file behind a ``DataLossError`` raised inside the block.

    ``file_patterns`` maps what the records are (``"training data"``) to
    their pattern. A record damaged after :func:`check_records` read it
    surfaces in the training loop as TF's "Graph execution error", which
    names no file; the patterns are then read again to find the damaged
    one. A ``DataLossError`` from anything else (a checkpoint) passes on
    unchanged.
    """
    try:
        yield
    except tf.errors.DataLossError:
        for what, pattern in file_patterns.items():
            try:
                files = list_record_files(pattern)
            except FileNotFoundError:
                continue
            for path in files:
                damage = _find_damage(path)
                if damage:
                    raise RecordError(f"{what}: {damage}") from None
        raise


def _find_damage(path: str) -> str | None:
    """:func:`_damage_message` for ``path``, or None when it reads whole."""
    try:
        tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1)
    except tf.errors.OpError as err:
        return _damage_message(path, err)
    return None
