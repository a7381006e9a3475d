"""Sharded, parallel, atomic TFRecord writing with progress.

Decoding and re-encoding images is the slow part of a conversion, so a pool
of threads does it (Pillow releases the GIL while it decodes and encodes),
while one thread writes the records *in input order*: record ``k`` goes to
shard ``k % num_shards``, so the output does not depend on the thread count.

Shards are written to hidden temporary files and renamed only once every
image has been handled: a converter that is killed or fails never leaves a
``{prefix}-00000-of-00004.tfrecord`` that looks complete but is not.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import glob
import os
import sys
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from efficientdet_tf.datasets.annotations import ImageRecord
from efficientdet_tf.datasets.validation import ConversionError, Report
from efficientdet_tf.utils.files import atomic_path
from efficientdet_tf.utils.progress import CountProgress

T = TypeVar("T")
R = TypeVar("R")
Build = Callable[[T], tuple[ImageRecord | None, Report]]


@dataclasses.dataclass
class Result:
    """What a conversion did: the report, the files it wrote, and notes for
    the user (e.g. where a derived label map went)."""
    report: Report
    outputs: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [self.report.summary(), "outputs:"]
        lines += [f"  {path}" for path in self.outputs]
        return "\n".join(lines + self.notes)


def default_num_threads() -> int:
    return min(8, os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T],
                num_threads: int) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, with at
    most a few items per thread in flight (bounded memory for big sets)."""
    if num_threads <= 1:
        yield from map(fn, items)
        return
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * num_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_records(items: Sequence[T], build: Build, output_prefix: str,
                  num_shards: int, report: Report,
                  num_threads: int | None = None,
                  on_written: Callable[[ImageRecord], None] | None = None,
                  ) -> list[str]:
    """Builds a record per item on ``num_threads`` threads and writes them to
    ``{output_prefix}-0000k-of-0000n.tfrecord``; returns the shard paths.

    ``build`` returns the record (``None`` to skip the item; it counts why in
    the report it returns). ``on_written`` sees each written record, in
    order, without its image bytes. No shard appears unless all are done;
    writing nothing at all is a :class:`ConversionError`.
    """
    from efficientdet_tf.data.tfrecord import encode_example, shard_path
    import tensorflow as tf

    if num_shards < 1:
        raise ConversionError(f"--num_shards must be at least 1, got {num_shards}")
    paths = [shard_path(output_prefix, i, num_shards) for i in range(num_shards)]

    def work(item: T) -> tuple[bytes | None, ImageRecord | None, Report]:
        record, item_report = build(item)
        if record is None:
            return None, None, item_report
        serialized = encode_example(record.to_example())
        record.encoded, record.masks = b"", None  # keep only what on_written needs
        return serialized, record, item_report

    progress = CountProgress(len(items))
    written = 0
    # Every shard is renamed into place when the block ends, none if it raises.
    with contextlib.ExitStack() as shards:
        temps = [shards.enter_context(atomic_path(p)) for p in paths]
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        try:
            for done, (serialized, record, item_report) in enumerate(ordered_map(
                    work, items, num_threads or default_num_threads()), 1):
                for message in report.merge(item_report):
                    progress.message(f"warning: {message}", sys.stderr)
                if record is not None:
                    writers[written % num_shards].write(serialized)
                    written += 1
                    if on_written:
                        on_written(record)
                progress.update(done)
        finally:
            for writer in writers:
                writer.close()
            progress.close()
        if not written:
            skipped = ", ".join(f"{n} {why}" for why, n in
                                sorted(report.skipped_images.items()))
            raise ConversionError(f"no images written (of {len(items)}"
                                  f"{': ' + skipped if skipped else ''})")
    _warn_stale_shards(output_prefix, paths)
    return paths


def _warn_stale_shards(prefix: str, paths: list[str]) -> None:
    """Shards of an earlier run with another ``--num_shards`` would be read
    together with the new ones by a ``{prefix}-*`` pattern."""
    stale = sorted(set(glob.glob(glob.escape(prefix) + "-?????-of-?????.tfrecord"))
                   - set(paths))
    if stale:
        print(f"warning: {len(stale)} shard(s) of an earlier run share the "
              f"prefix and were left in place, e.g. {stale[0]}; remove them "
              "before reading with a pattern", file=sys.stderr)
