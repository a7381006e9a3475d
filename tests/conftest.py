"""Shared test helpers: quiet TensorFlow, and locate the reference fixtures.

Fixtures (official automl outputs) live outside the repository. Tests find
them through ``EFFICIENTDET_FIXTURES`` (default ``../shared/fixtures`` next to
the checkout). On a user's clone they are absent and those tests skip; CI sets
``EFFICIENTDET_REQUIRE_FIXTURES=1`` so a missing fixture fails instead, and so
does every other skip (an optional package such as tf2onnx or the TF Serving
protos missing): in CI no test may skip quietly.
"""
from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUIRE_ENV = "EFFICIENTDET_REQUIRE_FIXTURES"


def _skips_fail() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turns a skip into a failure that says why it skipped."""
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else (
        report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped while {REQUIRE_ENV}=1 (CI): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = (yield).get_result()
    if report.skipped and _skips_fail() and not hasattr(report, "wasxfail"):
        _as_failure(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = (yield).get_result()  # a module-level importorskip lands here
    if report.skipped and _skips_fail():
        _as_failure(report)


def fixtures_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get(
        "EFFICIENTDET_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """The fixture folder, or skip (fail under CI) when it is missing."""
    root = fixtures_root()
    if not (root / "README.md").is_file():
        message = (f"reference fixtures not found at {root} "
                   "(set EFFICIENTDET_FIXTURES to the shared/fixtures folder)")
        pytest.skip(message)  # a failure under CI (pytest_runtest_makereport)
    return root


def _traced_custom_gradients() -> set[str]:
    """Names of the gradient functions ``tf.custom_gradient`` registered
    when traced into graphs (TensorFlow keeps them, and through them the
    graphs and every variable those captured, for the life of the process)."""
    if "tensorflow" not in sys.modules:
        return set()
    from tensorflow.python.framework import ops
    return {name for name in ops._gradient_registry.list()
            if name.startswith("CustomGradient-")}


@pytest.fixture(autouse=True)
def forget_traced_custom_gradients():
    """After each test, drops the gradient functions its traced
    ``tf.custom_gradient`` s (the loss's, TF's swish) registered: the
    registry would keep each traced graph, and with it the model weights,
    optimizer slots and EMA it captured, until the process ends. A finished
    test's graphs are never differentiated again (a training step takes its
    gradient inside its own trace)."""
    before = _traced_custom_gradients()
    yield
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import ops
        for name in _traced_custom_gradients() - before:
            del ops._gradient_registry._registry[name]


@pytest.fixture(scope="module", autouse=True)
def release_models_after_each_module():
    """Models, traced functions and their graphs otherwise pile up across the
    suite's modules (one pytest process): each module's are released when it
    ends, so the suite's peak memory is that of its largest module rather
    than their sum."""
    yield
    import gc

    import keras
    keras.backend.clear_session()
    gc.collect()
    _return_freed_memory()


def _return_freed_memory() -> None:
    """glibc keeps freed heap pages mapped, so without a trim a process's
    RSS only grows from module to module (and two test processes add up)."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        ctypes.CDLL(name).malloc_trim(0)


def tiny_config(**overrides):
    """A two-level config small enough to count anchors by hand: 16x32 image,
    levels 3-4, 2 scales x 2 ratios, anchor_scale 2, 3 classes."""
    from efficientdet_tf.config import get_config
    values = {"image_size": [16, 32], "min_level": 3, "max_level": 4,
              "num_scales": 2, "aspect_ratios": [1.0, [1.4, 0.7]],
              "anchor_scale": 2.0, "num_classes": 3}
    values.update(overrides)
    return get_config("efficientdet-d0", values)
