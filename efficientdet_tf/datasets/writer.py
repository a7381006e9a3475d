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
import dataclasses
import glob
import os
import sys
import time
from typing import IO, Callable, Iterable, Iterator, Sequence, TypeVar

from efficientdet_tf.datasets.annotations import ImageRecord
from efficientdet_tf.datasets.validation import ConversionError, Report

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


def temporary_path(path: str) -> str:
    """A hidden sibling of ``path``: same file system (so the final rename is
    atomic) and no match for ``{prefix}*`` or ``*.tfrecord`` patterns."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def atomic_write(path: str, data: bytes | str) -> None:
    """Writes ``path`` via a temporary file and a rename."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temp = temporary_path(path)
    try:
        with open(temp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class Progress:
    """A progress bar on a terminal; plain log lines (every 10%) otherwise,
    so CI logs and ``> log.txt`` get readable text, not carriage returns.
    Warnings go to stderr without breaking the bar."""

    def __init__(self, total: int, what: str = "images",
                 stream: IO[str] | None = None):
        self.total, self.what = total, what
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.done = 0
        self.start = self.last_draw = time.monotonic()
        self.next_log = 0.1

    def update(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.tty:
            if now - self.last_draw > 0.1 or self.done == self.total:
                self.last_draw = now
                self._draw(now)
        elif self.total and (self.done / self.total >= self.next_log
                             or self.done == self.total):
            while self.next_log <= self.done / self.total:
                self.next_log += 0.1
            print(self._status(now), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
        print(f"warning: {message}", file=sys.stderr, flush=True)
        if self.tty:
            self._draw(time.monotonic())

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _status(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        percent = 100 * self.done / max(self.total, 1)
        return (f"{self.done}/{self.total} {self.what} ({percent:.0f}%), "
                f"{rate:.1f}/s")

    def _draw(self, now: float) -> None:
        filled = int(30 * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (30 - filled)
        self.stream.write(f"\r[{bar}] {self._status(now)}")
        self.stream.flush()


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
    temps = [temporary_path(p) for p in paths]
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)

    def work(item: T) -> tuple[bytes | None, ImageRecord | None, Report]:
        record, item_report = build(item)
        if record is None:
            return None, None, item_report
        serialized = encode_example(record.to_example())
        record.encoded, record.masks = b"", None  # keep only what on_written needs
        return serialized, record, item_report

    progress = Progress(len(items))
    written = 0
    try:
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        try:
            for serialized, record, item_report in ordered_map(
                    work, items, num_threads or default_num_threads()):
                for message in report.merge(item_report):
                    progress.note(message)
                if record is not None:
                    writers[written % num_shards].write(serialized)
                    written += 1
                    if on_written:
                        on_written(record)
                progress.update()
        finally:
            for writer in writers:
                writer.close()
            progress.close()
        if not written:
            skipped = ", ".join(f"{n} {why}" for why, n in
                                sorted(report.skipped_images.items()))
            raise ConversionError(f"no images written (of {len(items)}"
                                  f"{': ' + skipped if skipped else ''})")
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    except BaseException:
        for temp in temps:
            _remove(temp)
        raise
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
