"""The one-line result format the benchmark scripts end with, so that
``side_by_side.py`` can run each in its own process (a fresh process per
measurement: its peak RSS is its own, and nothing traced before skews it)
and read back what it measured."""
from __future__ import annotations

import json
import resource
import statistics

PREFIX = "RESULT "


def peak_rss_gb() -> float:
    """This process's high-water resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def emit_result(values: dict) -> None:
    print(PREFIX + json.dumps(values), flush=True)


def parse_result(stdout: str) -> dict | None:
    """The last result line of a benchmark's output, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    return None
