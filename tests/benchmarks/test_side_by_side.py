"""The side-by-side benchmark's plumbing (not its numbers: speed is never a
test): the result line the scripts end with, and the one-line errors when
the official code or tf-keras is missing, the GPU script's skip."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


def run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k != "AUTOML_EFFICIENTDET_DIR"}
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**environment, **env}, check=False)


def test_result_line_round_trips():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from results import parse_result
    finally:
        sys.path.remove(str(BENCHMARKS))
    code = ("import sys; sys.path.insert(0, %r); from results import emit_result; "
            "print('noise'); emit_result({'ms': 1.5}); emit_result({'ms': 2.5, "
            "'peak_rss_gb': 0.75}); print('after')" % str(BENCHMARKS))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)
    assert parse_result(done.stdout) == {"ms": 2.5, "peak_rss_gb": 0.75}
    assert parse_result("no result here\n") is None


def test_side_by_side_without_the_official_code_says_how_to_get_it():
    done = run_script("side_by_side.py")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "--automl_dir" in done.stderr and "AUTOML_EFFICIENTDET_DIR" in done.stderr


def test_automl_reference_names_the_folder_it_did_not_find(tmp_path):
    done = run_script("automl_reference.py", "infer",
                      AUTOML_EFFICIENTDET_DIR=str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert str(tmp_path / "nowhere") in done.stderr
    assert "github.com/google/automl" in done.stderr


def test_unknown_measurement_is_refused(tmp_path):
    done = run_script("side_by_side.py", "--automl_dir", str(tmp_path),
                      "--what", "infer,speed")
    assert done.returncode == 1
    assert "--what speed: known are infer, train" in done.stderr


def test_gpu_check_skips_cleanly_without_a_gpu():
    done = run_script("gpu_check.py", CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no GPU visible to TensorFlow; nothing to measure (skipped)" in done.stdout
