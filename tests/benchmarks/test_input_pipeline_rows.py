"""The input benchmark's rows (plumbing, not speed): each augmentation row
builds and runs, unknown rows are a one-line error."""
from __future__ import annotations

from tests.benchmarks.test_side_by_side import run_script
from tests.conftest import REPO_ROOT


def test_rows_run_and_report_images_per_second():
    done = run_script("input_pipeline.py", "--image_size=128", "--batch_size=2",
                      "--batches=1", "--warmup=1", "--num_images=8",
                      "--num_shards=1", "--rows=none,mosaic,all",
                      "--no_train_step", PYTHONPATH=str(REPO_ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split()[0] for line in done.stdout.splitlines()
            if line.endswith("images/s") and line.startswith("  ")]
    assert rows == ["none", "mosaic", "all"]


def test_unknown_row_is_a_one_line_error():
    done = run_script("input_pipeline.py", "--rows=none,mozaic",
                      PYTHONPATH=str(REPO_ROOT))
    assert done.returncode == 2
    assert "unknown rows ['mozaic']" in done.stderr
    assert "Traceback" not in done.stderr
