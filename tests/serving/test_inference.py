"""Inference over files: listing inputs, the saved_model_infer / infer CLIs
(drawn images, detections JSON, COCO results, a corrupt file skipped),
benchmark and dry runmodes."""
from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from efficientdet_tf.serving.inference import (InferenceError,
                                       SavedModelDetector, coco_image_id,
                                       list_images, run_inference)
from efficientdet_tf.utils.progress import CountProgress

from tests.serving.serving_helpers import (run_cli, sample_images, small_export,
                             small_model)


@pytest.fixture(scope="module")
def export_dir(fixtures_dir) -> pathlib.Path:
    return small_export(fixtures_dir)


@pytest.fixture(scope="module")
def image_folder(fixtures_dir, tmp_path_factory) -> pathlib.Path:
    """Three readable images of two sizes and formats, one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    images = sample_images(fixtures_dir)
    Image.fromarray(images["a"][0]).save(folder / "000000000042.jpg",
                                         quality=95)
    Image.fromarray(images["a"][1]).save(folder / "mirror.png")
    Image.fromarray(images["b"][0]).save(folder / "crop.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_list_images_folder_glob_and_list(image_folder, tmp_path):
    listed = list_images(str(image_folder))
    assert [pathlib.Path(p).name for p in listed] == [
        "000000000042.jpg", "broken.jpg", "crop.png", "mirror.png"]
    assert list_images(str(image_folder / "*.png")) == [
        str(image_folder / "crop.png"), str(image_folder / "mirror.png")]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two files\n{image_folder / 'crop.png'}\n\n"
                       f"{image_folder / 'mirror.png'}\n")
    assert len(list_images(str(listing))) == 2
    with pytest.raises(InferenceError, match="names no image"):
        list_images(str(tmp_path / "*.jpg"))


def test_coco_image_ids_from_file_names():
    assert coco_image_id("val/000000397133.jpg", 7) == 397133
    assert coco_image_id("COCO_val2014_000000000042.jpg", 7) == 42
    assert coco_image_id("cat.png", 7) == 7


def test_saved_model_infer_skips_corrupt_file_and_writes_outputs(
        export_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    done = run_cli("--runmode=saved_model_infer",
                   f"--saved_model_dir={export_dir}",
                   f"--input_image={image_folder}", f"--output_image_dir={out}",
                   "--batch_size=2", "--min_score_thresh=0.5",
                   "--max_boxes_to_draw=5",
                   f"--coco_results_json={tmp_path / 'coco.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "3 image(s) processed, 1 skipped" in done.stdout
    assert "broken.jpg: corrupt" in done.stdout
    assert "4/4 images" in done.stderr  # plain progress lines, not a TTY
    assert sorted(p.name for p in out.iterdir()) == [
        "000000000042.jpg", "crop.png", "detections.json", "mirror.png"]
    report = json.loads((out / "detections.json").read_text())
    assert report["failed"][0]["file"].endswith("broken.jpg")
    by_name = {pathlib.Path(r["file"]).name: r for r in report["images"]}
    crop = by_name["crop.png"]
    assert (crop["height"], crop["width"]) == (170, 130)
    assert crop["scores"] and min(crop["scores"]) >= 0.5
    assert set(crop["names"]) <= {"cat", "dog", "bird"}
    assert len(crop["boxes"]) == len(crop["classes"]) == len(crop["names"])
    drawn = np.asarray(Image.open(out / "crop.png"))
    assert drawn.shape == (170, 130, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(
        image_folder / "crop.png")))
    coco = json.loads((tmp_path / "coco.json").read_text())
    ids = {row["image_id"] for row in coco}
    assert 42 in ids
    assert all(len(row["bbox"]) == 4 and row["score"] >= 0.5 for row in coco)


def test_frozen_pb_infers_like_its_saved_model(export_dir, image_folder,
                                              tmp_path):
    """automl users pass ``<saved_model_dir>/<model_name>_frozen.pb`` as
    --saved_model_dir; it gives the SavedModel's detections and names."""
    frozen = next(export_dir.glob("*_frozen.pb"))
    reports = {}
    for name, path in (("saved_model", export_dir), ("frozen", frozen)):
        out = tmp_path / name
        done = run_cli("--runmode=saved_model_infer",
                       f"--saved_model_dir={path}",
                       f"--input_image={image_folder}",
                       f"--output_image_dir={out}", "--min_score_thresh=0.3")
        assert done.returncode == 0, done.stderr[-3000:]
        reports[name] = {pathlib.Path(r["file"]).name: r for r in json.loads(
            (out / "detections.json").read_text())["images"]}
    assert sorted(reports["frozen"]) == sorted(reports["saved_model"]) == [
        "000000000042.jpg", "crop.png", "mirror.png"]
    for file, want in reports["saved_model"].items():
        got = reports["frozen"][file]
        assert got["classes"] == want["classes"] and got["names"] == want["names"]
        assert len(got["scores"]) == len(want["scores"]) > 0
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=0.05)
    done = run_cli("--runmode=saved_model_benchmark",
                   f"--saved_model_dir={frozen}", "--bm_runs=2",
                   "--warmup_runs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ms" in done.stdout


def test_fixed_batch_pads_and_dynamic_batch_agree(export_dir, image_folder,
                                                  fixtures_dir, tmp_path):
    """One image at a time, two at a time and a fixed-batch in-process
    detector (last batch padded) give the same detections."""
    from efficientdet_tf.serving.export import ServingGraph
    from efficientdet_tf.serving.inference import GraphDetector
    files = [str(image_folder / n) for n in ("000000000042.jpg",
                                             "mirror.png", "crop.png")]
    quiet = CountProgress(3, io.StringIO())
    saved = SavedModelDetector(str(export_dir))
    assert saved.batch_size is None and saved.label_map[2] == "dog"
    one = run_inference(saved, files, batch_size=1, min_score_thresh=0.3,
                        progress=quiet)
    two = run_inference(saved, files, batch_size=2, min_score_thresh=0.3,
                        progress=quiet)
    fixed = GraphDetector(ServingGraph(*small_model(fixtures_dir),
                                       batch_size=2))
    padded = run_inference(fixed, files, min_score_thresh=0.3, progress=quiet)
    assert len(one.results) == len(files)
    for a, b, c in zip(one.results, two.results, padded.results, strict=True):
        assert a.file == b.file == c.file
        assert a.classes, f"{a.file}: no detection at 0.3 to compare"
        assert a.classes == b.classes == c.classes
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.scores, c.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.boxes, c.boxes, atol=0.05)


def test_infer_from_checkpoint_matches_the_export(fixtures_dir, export_dir,
                                                  image_folder, tmp_path):
    """--runmode=infer on a native checkpoint of the same weights (config
    from the export's config.yaml) gives the SavedModel's detections."""
    from efficientdet_tf.modeling.checkpoint import save_native
    model, config = small_model(fixtures_dir)
    ckpt = save_native(model, tmp_path / "ckpt")
    config.to_yaml(str(tmp_path / "config.yaml"))
    files = [str(image_folder / n) for n in ("crop.png", "mirror.png")]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(files))
    done = run_cli("--runmode=infer", f"--ckpt_path={ckpt}",
                   f"--hparams={tmp_path / 'config.yaml'}",
                   f"--input_image={listing}", "--min_score_thresh=0.3",
                   f"--output_image_dir={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads((tmp_path / "out" / "detections.json").read_text())
    export = run_inference(SavedModelDetector(str(export_dir)), files,
                           min_score_thresh=0.3,
                           progress=CountProgress(2, io.StringIO()))
    assert len(export.results) == len(files)
    for mine, theirs in zip(ours["images"], export.results, strict=True):
        assert mine["file"] == theirs.file
        assert theirs.classes, f"{theirs.file}: no detection at 0.3 to compare"
        assert mine["classes"] == theirs.classes
        np.testing.assert_allclose(mine["scores"], theirs.scores, atol=1e-4)
        np.testing.assert_allclose(mine["boxes"], theirs.boxes, atol=0.05)


def test_saved_model_benchmark_and_dry(export_dir, capsys):
    done = run_cli("--runmode=saved_model_benchmark",
                   f"--saved_model_dir={export_dir}", "--bm_runs=3",
                   "--warmup_runs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 runs: median" in done.stdout and "images/s" in done.stdout
    import model_inspect
    assert model_inspect.main(["--runmode=dry",
                               "--hparams=image_size=128,num_classes=3"]) == 0
    printed = capsys.readouterr().out
    assert "forward pass ok" in printed and "trainable parameters" in printed


def test_missing_saved_model_is_one_line(tmp_path):
    done = run_cli("--runmode=saved_model_infer",
                   f"--saved_model_dir={tmp_path / 'none'}",
                   f"--input_image={tmp_path}/*.jpg",
                   f"--output_image_dir={tmp_path / 'out'}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "model_inspect.py: error: no SavedModel directory at")
