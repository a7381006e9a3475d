"""Shared test helpers: quiet TensorFlow, and locate the reference fixtures.

Fixtures (official automl outputs) live outside the repository. Tests find
them through ``EFFICIENTDET_FIXTURES`` (default ``../shared/fixtures`` next to
the checkout). On a user's clone they are absent and those tests skip; CI sets
``EFFICIENTDET_REQUIRE_FIXTURES=1`` so a missing fixture fails instead.
"""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
        if os.environ.get("EFFICIENTDET_REQUIRE_FIXTURES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root
