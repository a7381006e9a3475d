"""Training progress for people and for logs.

On a terminal one line is redrawn every step (a bar with step, loss,
learning rate, images/s and time left); anywhere else (CI, ``| tee``,
``nohup``) a plain line is printed every ``every`` steps, because carriage
returns turn a log file into one unreadable line.
"""
from __future__ import annotations

import sys
import time
from typing import Mapping, TextIO

BAR_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Reports steps ``start+1 .. total`` of a run with ``batch_size``
    images per step.

    Throughput is measured from the end of the first reported step, so the
    one-off graph tracing does not count, and over the steps since the last
    plain line (a moving picture, not a run-long average).
    """

    def __init__(self, start: int, total: int, batch_size: int, every: int = 10,
                 stream: TextIO | None = None, interactive: bool | None = None):
        self.total, self.batch_size, self.every = total, batch_size, max(1, every)
        self.stream = stream or sys.stdout
        self.interactive = (self.stream.isatty() if interactive is None
                            else interactive)
        self._window_step, self._window_time = start, None
        self._last_rate = 0.0
        self._drawn = 0  # length of the bar line on screen, 0: none

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
        text = self._text(step, losses, learning_rate)
        if self.interactive:
            # Padding blanks out the rest of a longer previous line.
            self.stream.write("\r" + text.ljust(self._drawn))
            self._drawn = len(text)
        elif step % self.every == 0 or step == self.total:
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (checkpoint saved, eval results) that does not
        get mixed into the bar. The time spent before it (saving) is left
        out of the throughput: the next step starts a new window."""
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()
        self._window_time = None

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _text(self, step: int, losses: Mapping[str, float],
              learning_rate: float) -> str:
        terms = " ".join(f"{name} {value:.4f}" for name, value in losses.items())
        rate = f"{self._last_rate:.1f} img/s" if self._last_rate else "-- img/s"
        left = ""
        if self._last_rate:
            seconds = (self.total - step) * self.batch_size / self._last_rate
            left = f" eta {_duration(seconds)}"
        head = f"step {step}/{self.total}"
        if self.interactive:
            filled = round(BAR_WIDTH * step / max(self.total, 1))
            head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {head}"
        return f"{head} {terms} lr {learning_rate:.5g} {rate}{left}"
