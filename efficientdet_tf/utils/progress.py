"""Progress for people and for logs: one display for every long loop
(training steps, dataset conversion, inference over files).

On a terminal one line is redrawn (a bar, then the loop's text); anywhere
else (CI, ``| tee``, ``nohup``) a plain line is printed every ``every``
units and at the end, because carriage returns turn a log file into one
unreadable line. Messages (a checkpoint saved, a skipped annotation) get a
line of their own above the bar instead of being mixed into it.

This is written here rather than on ``keras.utils.Progbar`` because Progbar
cannot do what the loops need: it writes only to ``sys.stdout`` (inference
keeps stdout for its results and reports progress on stderr), it takes every
POSIX process for a terminal (``"posix" in sys.modules``), so a log file
would fill with backspaces and carriage returns, told otherwise
(``verbose=2``) it prints nothing until the end, and its line format is its
own, while the training log lines (``step N/M loss ...``) are read by
scripts and must not change.

Standard library only: the dataset converters import this without paying for
TensorFlow.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Mapping, TextIO

BAR_WIDTH = 24
# Redraws per second a counting loop (an image every millisecond) may cost.
COUNT_REDRAW_SECONDS = 0.1


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """Shows ``done`` of ``total`` units with a text the caller formats.

    ``interactive`` (default: whether ``stream`` is a terminal) picks the
    redrawn bar over plain lines; ``min_interval`` seconds between redraws
    keep a fast loop from spending its time on the terminal (the last unit
    is always drawn).
    """

    def __init__(self, total: int, every: int, stream: TextIO,
                 interactive: bool | None = None, min_interval: float = 0.0):
        self.total, self.every = total, max(1, every)
        self.stream = stream
        self.interactive = (stream.isatty() if interactive is None
                            else interactive)
        self.min_interval = min_interval
        self._shown = ""  # the bar line on screen, "" when none
        self._drawn_at = -math.inf

    def show(self, done: int, text: str) -> None:
        """Reports ``done`` units; reaching ``total`` ends the bar's line."""
        if self.interactive:
            now = time.monotonic()
            if done < self.total and now - self._drawn_at < self.min_interval:
                return
            self._drawn_at = now
            filled = round(BAR_WIDTH * done / max(self.total, 1))
            self._draw(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}")
            if done >= self.total:
                self.close()
        elif done % self.every == 0 or done == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """Writes ``text`` as a line of its own to ``stream`` (default: the
        progress stream); on a terminal the bar is cleared first and
        redrawn below it."""
        shown = self._shown
        if shown:
            # Flushed before a message on another stream reaches the screen.
            self.stream.write("\r" + " " * len(shown) + "\r")
            self.stream.flush()
        target = stream or self.stream
        target.write(text + "\n")
        target.flush()
        if shown:
            self.stream.write(shown)
            self.stream.flush()

    def close(self) -> None:
        """Ends the bar's line, so what is printed next starts on its own."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = ""

    def _draw(self, line: str) -> None:
        # Padding blanks out the rest of a longer previous line.
        self.stream.write("\r" + line.ljust(len(self._shown)))
        self.stream.flush()
        self._shown = line


class Progress(ProgressLine):
    """Training steps ``start+1 .. total`` of ``batch_size`` images each:
    losses, learning rate, images/s and time left.

    Throughput is measured from the end of the first reported step, so the
    one-off graph tracing does not count, and over the steps since the last
    plain line (a moving picture, not a run-long average).
    """

    def __init__(self, start: int, total: int, batch_size: int, every: int = 10,
                 stream: TextIO | None = None, interactive: bool | None = None):
        super().__init__(total, every, stream or sys.stdout, interactive)
        self.batch_size = batch_size
        self._window_step, self._window_time = start, None
        self._last_rate = 0.0

    def images_per_second(self) -> float:
        """Throughput of the current window (0 until two steps were seen)."""
        return self._last_rate

    def update(self, step: int, losses: Mapping[str, float],
               learning_rate: float) -> None:
        now = time.perf_counter()
        if self._window_time is None:
            self._window_step, self._window_time = step, now
        elif step > self._window_step:
            self._last_rate = ((step - self._window_step) * self.batch_size /
                               (now - self._window_time))
            if step - self._window_step >= self.every:
                self._window_step, self._window_time = step, now
        self.show(step, self._text(step, losses, learning_rate))

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """The time spent before a message (saving a checkpoint) is left out
        of the throughput: the next step starts a new window."""
        super().message(text, stream)
        self._window_time = None

    def _text(self, step: int, losses: Mapping[str, float],
              learning_rate: float) -> str:
        terms = " ".join(f"{name} {value:.4f}" for name, value in losses.items())
        rate = f"{self._last_rate:.1f} img/s" if self._last_rate else "-- img/s"
        left = ""
        if self._last_rate:
            seconds = (self.total - step) * self.batch_size / self._last_rate
            left = f" eta {_duration(seconds)}"
        return (f"step {step}/{self.total} {terms} lr {learning_rate:.5g} "
                f"{rate}{left}")


class CountProgress(ProgressLine):
    """``done/total`` items (images converted, files run through a model)
    with the share done and the rate since the start; plain lines every
    tenth of the run."""

    def __init__(self, total: int, stream: TextIO | None = None, *,
                 what: str = "images", interactive: bool | None = None):
        super().__init__(total, math.ceil(total / 10), stream or sys.stdout,
                         interactive, COUNT_REDRAW_SECONDS)
        self.what = what
        self._start = time.perf_counter()

    def update(self, done: int) -> None:
        rate = done / max(time.perf_counter() - self._start, 1e-9)
        percent = 100 * done / max(self.total, 1)
        self.show(done, f"{done}/{self.total} {self.what} ({percent:.0f}%), "
                        f"{rate:.1f}/s")
