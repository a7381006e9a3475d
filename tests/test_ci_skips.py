"""In CI (EFFICIENTDET_REQUIRE_FIXTURES=1) a skip is a failure, whatever
skipped: a fixture, an optional package, a module-level importorskip."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, REQUIRE_ENV

SKIPPING = '''
import pytest
pytest.importorskip("a_package_nobody_has")
def test_never_runs():
    pass
'''

SKIPPING_INSIDE = '''
import pytest
def test_optional():
    pytest.importorskip("a_package_nobody_has")
@pytest.mark.skipif(True, reason="marked")
def test_marked():
    pass
def test_runs():
    pass
'''


@pytest.fixture
def suite(tmp_path: pathlib.Path) -> pathlib.Path:
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_module_skip.py").write_text(SKIPPING)
    (tmp_path / "test_inner_skip.py").write_text(SKIPPING_INSIDE)
    return tmp_path


def run(folder: pathlib.Path, require: bool, *files: str
        ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    if require:
        env[REQUIRE_ENV] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", *files], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120)


def test_skips_fail_in_ci_and_skip_elsewhere(suite):
    done = run(suite, False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped" in done.stdout
    done = run(suite, True, "test_inner_skip.py")
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 error" in done.stdout  # skipif: setup
    assert "a_package_nobody_has" in done.stdout and "marked" in done.stdout
    done = run(suite, True, "test_module_skip.py")
    assert done.returncode != 0, done.stdout
    assert "skipped while" in done.stdout and "1 error" in done.stdout
