"""``dataset/analyze_dataset.py`` as a user runs it: from a folder of their
own, with relative paths, on the generated demo dataset's COCO JSON and on
records converted from it; its exit status (1 when the data has errors) and
its one-line errors.

The script is this checkout's (``REPO_ROOT``), not a ``checkout_copy``: that
copies the files git tracks, and the test must run the files as they are.
"""
from __future__ import annotations

import json
import pathlib
import sys

import pytest

from efficientdet_tf.cli import analyze_dataset
from efficientdet_tf.config import get_config
from efficientdet_tf.datasets import doctor_plots
from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.demo import make_demo_dataset
from tests.conftest import REPO_ROOT
from tests.workflows.workdir import run_shell

SCRIPT = REPO_ROOT / "dataset" / "analyze_dataset.py"
PROG = "analyze_dataset.py"
# The config the demo trains with (hparams/demo.yaml's anchors), at the
# demo's image size.
HPARAMS = ("num_classes: 3\nlabel_map: {1: circle, 2: square, 3: triangle}\n"
           "image_size: 128\nmax_level: 5\nanchor_scale: 2.0\n")
PLOTS = (doctor_plots.SIZES_PLOT, doctor_plots.ASPECTS_PLOT,
         doctor_plots.SHAPES_PLOT)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
    """A user's folder: demo/ (COCO JSON, XML, images), records/ converted
    from it, and their hparams file."""
    root = tmp_path_factory.mktemp("user")
    make_demo_dataset(str(root / "demo"), num_train=12, num_val=0,
                      image_size=128)
    convert_coco(str(root / "demo" / "train" / "images"),
                 str(root / "demo" / "train" / "annotations.json"),
                 str(root / "records" / "train"))
    (root / "demo.yaml").write_text(HPARAMS)
    return root


def analyze(work: pathlib.Path, *args: str):
    return run_shell(f"python {SCRIPT} {' '.join(args)}", work, timeout=300)


def error_lines(stderr: str) -> list[str]:
    """The command's own lines (TensorFlow's start-up log may precede
    them); never a traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith(PROG)]


@pytest.mark.slow  # runs the CLI in a subprocess
def test_coco_json_report_and_plots(work):
    done = analyze(work, "--coco_json=demo/train/annotations.json",
                   "--hparams=demo.yaml", "--output_dir=doctor")
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == []
    assert "dataset: demo/train/annotations.json" in done.stdout
    report = json.loads((work / "doctor" / "report.json").read_text())
    assert done.stdout.splitlines()[-1] == f"verdict: {report['verdict']}"
    assert report["images"] == 12 and not report["errors"]
    assert {c["name"] for c in report["classes"]} <= {"circle", "square",
                                                       "triangle"}
    for name in PLOTS:
        assert (work / "doctor" / name).stat().st_size > 0


@pytest.mark.slow  # runs the CLI in a subprocess
def test_records_with_fit_anchors_write_hparams(work):
    done = analyze(work, "--file_pattern='records/train-*.tfrecord'",
                   "--hparams=demo.yaml", "--output_dir=fit", "--fit_anchors",
                   "--num_anchor_ratios=2")
    assert done.returncode == 0, done.stderr
    assert "anchor fit (--fit_anchors): " in done.stdout
    assert "--hparams=<your hparams.yaml>,fit/anchors.yaml" in done.stdout
    report = json.loads((work / "fit" / "report.json").read_text())
    assert report["images"] == 12
    fitted = report["anchor_fit"]["overrides"]
    config = get_config("efficientdet-d0", str(work / "fit" / "anchors.yaml"))
    assert [list(r) for r in config.aspect_ratios] == fitted["aspect_ratios"]
    assert len(config.aspect_ratios) == 2
    assert config.anchor_scale == fitted["anchor_scale"]
    for name in PLOTS:
        assert (work / "fit" / name).is_file()


@pytest.mark.slow  # runs the CLI in a subprocess
@pytest.mark.parametrize("args, message", [
    (["--coco_json=demo/missing.json"],
     f"{PROG}: error: demo/missing.json: file not found"),
    (["--coco_json=demo/train/annotations.json", "--hparams=num_classes=2",
      "--output_dir=bad"],
     f"{PROG}: error: class id 3 ")])
def test_bad_input_is_one_line_and_exit_1(work, args, message):
    done = analyze(work, *args)
    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert line.startswith(message)
    if "--output_dir=bad" in args:
        assert "is outside 1..num_classes=2" in line and "train_000" in line
        assert "errors:" in done.stdout
        report = json.loads((work / "bad" / "report.json").read_text())
        assert report["verdict"].startswith("error: class id 3 ")


def test_text_is_the_same_without_matplotlib(work, monkeypatch, capsys):
    """Only the plots line changes, to one saying how to get them."""
    pytest.importorskip("matplotlib", reason="compares the output with "
                        "matplotlib to the output without")
    argv = [f"--coco_json={work / 'demo' / 'train' / 'annotations.json'}",
            f"--hparams={work / 'demo.yaml'}",
            f"--output_dir={work / 'text'}"]
    assert analyze_dataset.main(argv) == 0
    with_plots = capsys.readouterr().out.splitlines()
    for name in ("matplotlib", "matplotlib.figure",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    assert analyze_dataset.main(argv) == 0
    without = capsys.readouterr().out.splitlines()
    changed = [(a, b) for a, b in zip(with_plots, without) if a != b]
    assert len(with_plots) == len(without)
    assert [b for _, b in changed] == [doctor_plots.SKIPPED]
    assert changed[0][0].startswith("plots: ")


@pytest.mark.parametrize("argv", [
    ["--coco_json=a.json", "--label_map=map.yaml"],
    ["--coco_json=a.json", "--num_anchor_ratios=2"],
    ["--coco_json=a.json", "--voc_dir=xml"]])
def test_flags_that_do_not_go_together(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        analyze_dataset.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"{PROG}: error: ")
