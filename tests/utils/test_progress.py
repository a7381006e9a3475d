"""The one progress display: plain lines for logs, a redrawn bar on a
terminal, messages that do not break the bar. (Training's ``step N/M``
lines are checked in tests/training/test_train.py.)"""
from __future__ import annotations

import io

from efficientdet_tf.utils.progress import CountProgress, ProgressLine


def _plain_counts(total: int) -> list[str]:
    stream = io.StringIO()
    progress = CountProgress(total, stream, what="files")
    for done in range(1, total + 1):
        progress.update(done)
    assert "\r" not in stream.getvalue()
    return [line.split()[0] for line in stream.getvalue().splitlines()]


def test_plain_lines_every_tenth_of_the_run_and_at_the_end():
    # The converters' old float steps (0.1 added up) printed 31/100, not 30.
    assert _plain_counts(100) == [f"{n}/100" for n in range(10, 101, 10)]
    assert _plain_counts(25) == [f"{n}/25" for n in (*range(3, 25, 3), 25)]
    assert _plain_counts(3) == ["1/3", "2/3", "3/3"]


def test_count_line_says_what_how_far_and_how_fast():
    stream = io.StringIO()
    CountProgress(4, stream, what="files").update(4)
    assert stream.getvalue().startswith("4/4 files (100%), ")
    assert stream.getvalue().endswith("/s\n")


def test_bar_is_redrawn_padded_and_ends_its_line_at_the_total():
    stream = io.StringIO()
    line = ProgressLine(4, every=1, stream=stream, interactive=True)
    line.show(1, "a longer text")
    line.show(2, "short")
    line.show(4, "done")
    line.close()  # already ended: no second newline
    first, second, last = stream.getvalue().split("\r")[1:]
    assert first == "[" + "#" * 6 + "." * 18 + "] a longer text"
    assert second.startswith("[" + "#" * 12) and len(second) == len(first)
    assert last == ("[" + "#" * 24 + "] done").ljust(len(second.rstrip())) + "\n"


def test_redraws_are_throttled_but_the_last_is_always_drawn():
    stream = io.StringIO()
    line = ProgressLine(50, every=1, stream=stream, interactive=True,
                        min_interval=3600)
    for done in range(1, 51):
        line.show(done, f"{done}")
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("] 50\n")


def test_message_gets_its_own_line_and_the_bar_comes_back():
    bar, log = io.StringIO(), io.StringIO()
    line = ProgressLine(10, every=1, stream=bar, interactive=True)
    line.show(5, "half")
    line.message("warning: skipped one", log)
    drawn = "[" + "#" * 12 + "." * 12 + "] half"
    assert log.getvalue() == "warning: skipped one\n"
    assert bar.getvalue() == "\r" + drawn + "\r" + " " * len(drawn) + "\r" + drawn
    line.close()
    assert bar.getvalue().endswith(drawn + "\n")


def test_without_a_terminal_a_message_is_just_a_line():
    stream = io.StringIO()
    line = ProgressLine(10, every=5, stream=stream, interactive=False)
    line.show(1, "not shown")
    line.message("saved ckpt-1")
    line.show(5, "step 5")
    line.close()
    assert stream.getvalue() == "saved ckpt-1\nstep 5\n"
