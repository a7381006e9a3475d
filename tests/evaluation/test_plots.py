"""The evaluation plots render to PNG files of a sane size, and say what to
install when matplotlib is missing."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
from PIL import Image

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.evaluation import analysis, plots
from efficientdet_tf.utils import plotting
from efficientdet_tf.evaluation.coco_metrics import run_cocoeval
from efficientdet_tf.evaluation import coco_metrics as cm

pytest.importorskip("matplotlib")

NAMES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def evaluator():
    """Three classes with ground truth, each found with a jittered box and
    a false positive beside it."""
    rng = np.random.default_rng(1)
    annotations, results = [], []
    for n in range(1, 31):
        image_id, category = 1 + n % 5, 1 + n % 3
        box = [*rng.uniform(0, 120, 2), *rng.uniform(10, 80, 2)]
        annotations.append({"id": n, "image_id": image_id,
                            "category_id": category, "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0})
        results.append({"image_id": image_id, "category_id": category,
                        "bbox": list(np.add(box, rng.normal(0, 3, 4))),
                        "score": float(rng.random())})
        results.append({"image_id": image_id, "category_id": category,
                        "bbox": [*rng.uniform(0, 150, 2), 20.0, 20.0],
                        "score": float(rng.random())})
    ground_truth = cm.coco_from_dict({
        "images": [{"id": i, "height": 200, "width": 200} for i in range(1, 6)],
        "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES, 1)],
        "annotations": annotations})
    return run_cocoeval(ground_truth, results)


def check_png(path, size):
    """The file decodes to ``size`` pixels and weighs what a plot should."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
    data = open(path, "rb").read()
    assert 5_000 < len(data) < 2_000_000
    assert max(size) <= 1600


def test_pr_curves_png(evaluator, tmp_path):
    curves = analysis.pr_curves(evaluator, NAMES)
    path = plots.plot_pr_curves(curves, tmp_path / "pr.png")
    assert path == str(tmp_path / "pr.png")
    check_png(path, (1300, 550))


def test_pr_curves_with_more_classes_than_a_legend_holds(tmp_path):
    count = plots.MAX_LEGEND + 5
    curve = np.linspace(1, 0, 101)[None].repeat(count, 0)
    ap = np.full(count, curve[0].mean())
    ap[0] = np.nan  # a class without ground truth
    curves = analysis.PrCurves(np.linspace(0, 1, 101), curve, curve, ap, ap,
                               tuple(f"class{i}" for i in range(count)),
                               tuple(range(1, count + 1)))
    check_png(plots.plot_pr_curves(curves, tmp_path / "pr.png"), (1300, 550))


def test_f1_curves_png(evaluator, tmp_path):
    f1 = analysis.f1_curves(evaluator, NAMES)
    assert 0 < f1.overall_best_f1 < 1
    check_png(plots.plot_f1_curves(f1, tmp_path / "f1.png"), (1300, 550))


@pytest.mark.parametrize("classes", [3, 80])
def test_confusion_matrix_png(tmp_path, classes):
    matrix = np.random.default_rng(0).integers(0, 20, (classes + 1,) * 2)
    names = [f"class{i}" for i in range(classes)]
    path = plots.plot_confusion_matrix(matrix, names, 0.3, tmp_path / "cm.png")
    side = min(8.0, max(4.5, 2.5 + 0.45 * (classes + 1)))
    check_png(path, (round(200 * side), round(100 * (side + 0.5))))
    with pytest.raises(ValueError, match="expected 4 x 4"):
        plots.plot_confusion_matrix(matrix[:2, :2], names[:3], 0.3,
                                    tmp_path / "bad.png")


def test_training_curves_png(tmp_path):
    history = [{"step": s, "loss": 2.0 / s, "cls_loss": 1.2 / s,
                "box_loss": 0.8 / s, "learning_rate": 0.01 * s / 10}
               for s in range(1, 11)]
    history += [{"step": 5, "AP": 0.1, "AP50": 0.3},
                {"step": 10, "AP": 0.2, "AP50": 0.45}]
    check_png(plots.plot_training_curves(history, tmp_path / "train.png"),
              (1500, 450))
    losses_only = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")},
                   {"step": 3, "loss": 0.5}]
    check_png(plots.plot_training_curves(losses_only, tmp_path / "loss.png"),
              (500, 450))
    empty = plots.plot_training_curves([], tmp_path / "empty.png")
    with Image.open(empty) as image:
        assert image.size == (500, 450)


def test_render_png_and_no_temporary_files_left(evaluator, tmp_path):
    figure = plotting.require_matplotlib()(figsize=(2, 1))
    assert plotting.render_png(figure).startswith(b"\x89PNG\r\n\x1a\n")
    plots.plot_pr_curves(analysis.pr_curves(evaluator, NAMES),
                         tmp_path / "sub" / "pr.png")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["pr.png"]


def test_missing_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_matplotlib)
    with pytest.raises(plotting.PlotsUnavailable) as raised:
        plots.plot_training_curves([], tmp_path / "train.png")
    assert str(raised.value) == ("plots need matplotlib: pip install "
                                 "'efficientdet_tf[plots]'")
    assert isinstance(raised.value, EfficientDetError)
    assert not (tmp_path / "train.png").exists()
