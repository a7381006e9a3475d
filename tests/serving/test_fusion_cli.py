"""TTA, tiles and ensembles as users type them: model_inspect.py from a
working directory with relative paths, on a SavedModel and a model_dir of
the same weights.

A checkpoint and its export compute the same detections, so with the same
fusion flags they must give the same fused detections; an ensemble of a
model with itself must detect what the model alone detects (WBF of
identical parts is the identity).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.serving.serving_helpers import (sample_images, small_export,
                                           small_model)


@pytest.fixture(scope="module")
def workdir(fixtures_dir, tmp_path_factory) -> pathlib.Path:
    """models/export (SavedModel), models/run (a model_dir: checkpoint +
    config.yaml), images/ (two sizes)."""
    from efficientdet_tf.modeling.checkpoint import save_native
    root = tmp_path_factory.mktemp("fusion_cli")
    shutil.copytree(small_export(fixtures_dir), root / "models" / "export")
    model, config = small_model(fixtures_dir)
    save_native(model, root / "models" / "run")
    config.to_yaml(str(root / "models" / "run" / "config.yaml"))
    images = sample_images(fixtures_dir)
    (root / "images").mkdir()
    Image.fromarray(images["a"][0]).save(root / "images" / "photo.png")
    Image.fromarray(images["b"][0]).save(root / "images" / "crop.png")
    return root


def inspect(workdir: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO_ROOT / "model_inspect.py"),
                           *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=workdir)


def detections(workdir: pathlib.Path, folder: str) -> list[dict]:
    return json.loads((workdir / folder / "detections.json").read_text())[
        "images"]


def test_checkpoint_and_export_agree_under_flip_tta(workdir):
    common = ["--tta=flip", "--input_image=images", "--min_score_thresh=0.3"]
    export = inspect(workdir, "--runmode=saved_model_infer",
                     "--saved_model_dir=models/export",
                     "--output_image_dir=tta_export", *common)
    assert export.returncode == 0, export.stderr[-3000:]
    assert "1 model(s) x 2 view(s); TTA x1, flip x1; merged by wbf" in \
        export.stdout
    ckpt = inspect(workdir, "--runmode=infer", "--ckpt_path=models/run",
                   "--hparams=models/run/config.yaml",
                   "--output_image_dir=tta_ckpt", *common)
    assert ckpt.returncode == 0, ckpt.stderr[-3000:]
    ours, theirs = detections(workdir, "tta_ckpt"), detections(workdir,
                                                                "tta_export")
    assert [i["file"] for i in ours] == ["images/crop.png", "images/photo.png"]
    assert any(i["classes"] for i in ours), "nothing at 0.3 to compare"
    for a, b in zip(ours, theirs, strict=True):
        assert a["classes"] == b["classes"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=0.05)
    assert (workdir / "tta_ckpt" / "photo.png").is_file()


def test_an_ensemble_of_a_model_with_itself_is_the_model(workdir):
    plain = inspect(workdir, "--runmode=saved_model_infer",
                    "--saved_model_dir=models/export", "--input_image=images",
                    "--output_image_dir=plain", "--min_score_thresh=0.3")
    assert plain.returncode == 0, plain.stderr[-3000:]
    # The SavedModel and the model_dir: two kinds, one set of weights.
    both = inspect(workdir, "--runmode=ensemble_infer",
                   "--saved_model_dir=models/export,models/run",
                   "--input_image=images", "--output_image_dir=ensemble",
                   "--min_score_thresh=0.3", "--ensemble_weights=2,1")
    assert both.returncode == 0, both.stderr[-3000:]
    assert "2 model(s) x 1 view(s); merged by wbf" in both.stdout
    for a, b in zip(detections(workdir, "ensemble"),
                    detections(workdir, "plain"), strict=True):
        assert sorted(a["classes"]) == sorted(b["classes"])
        np.testing.assert_allclose(sorted(a["scores"]), sorted(b["scores"]),
                                   atol=1e-4)


def test_tiled_inference_keeps_boxes_in_the_image(workdir):
    done = inspect(workdir, "--runmode=saved_model_infer",
                   "--saved_model_dir=models/export", "--input_image=images",
                   "--output_image_dir=tiled", "--tile_size=96",
                   "--tile_overlap=0.25", "--tile_full_image",
                   "--min_score_thresh=0.05")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiles 96 px, overlap 0.25 + whole image" in done.stdout
    found = detections(workdir, "tiled")
    assert sum(len(i["boxes"]) for i in found) > 0
    for image in found:
        boxes = np.array(image["boxes"]).reshape(-1, 4)
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= image["height"]).all()
        assert (boxes[:, [1, 3]] <= image["width"]).all()


@pytest.mark.parametrize("args, code, message", [
    (["--runmode=ensemble_infer", "--saved_model_dir=models/export"], 2,
     "needs two or more models"),
    (["--runmode=saved_model_infer", "--saved_model_dir=models/export",
      "--tta=mirror"], 1, "unknown item 'mirror'"),
    (["--runmode=ensemble_infer", "--saved_model_dir=models/export,models/run",
      "--ensemble_weights=1,2,3"], 1, "3 value.*2 model"),
    (["--runmode=ensemble_infer", "--saved_model_dir=models/export,models/gone"],
     1, "no model at models/gone"),
])
def test_fusion_flag_errors_are_one_line(workdir, args, code, message):
    import re
    done = inspect(workdir, *args, "--input_image=images",
                   "--output_image_dir=never")
    assert done.returncode == code, done.stderr[-3000:]
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
