"""Evaluating exports (model_inspect.py --runmode=eval_saved_model): the
SavedModel and the TFLite file score what the checkpoint scores.

Ground truth: the serving function's own confident detections on the
fixture images (lossless PNG records), so the SavedModel, which computes
exactly that, must score AP 1, and the TFLite file and the checkpoint
nearly as well at IoU 0.5; boxes left in the letterbox's pixels, or scaled
twice, would score near 0.
"""
from __future__ import annotations

import pytest

from efficientdet_tf.data.tfrecord import Example, encode_example
from efficientdet_tf.evaluation import report
from efficientdet_tf.evaluation.evaluate import evaluate
from efficientdet_tf.evaluation.evaluate_export import evaluate_export
from efficientdet_tf.modeling.detector import Detector
from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
from tests.serving.serving_helpers import (png_bytes, sample_images,
                                           small_export, small_model, temp_root)

CONFIDENT = 0.5


@pytest.fixture(scope="module")
def pseudo_labelled_records(fixtures_dir) -> str:
    import tensorflow as tf
    model, config = small_model(fixtures_dir)
    function = ServingGraph(model, config).functions()[SERVING_DEFAULT]
    path = temp_root() / "pseudo.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        index = 0
        for batch in sample_images(fixtures_dir).values():
            outputs = {k: v.numpy() for k, v in function(batch).items()}
            for i, (image, data) in enumerate(zip(batch, png_bytes(batch))):
                keep = outputs["detection_scores"][i] >= CONFIDENT
                height, width = image.shape[:2]
                boxes = outputs["detection_boxes"][i][keep] / [height, width,
                                                               height, width]
                classes = outputs["detection_classes"][i][keep].astype(int)
                writer.write(encode_example(Example(
                    encoded=data, image_format="png", height=height,
                    width=width, filename=f"{index}.png", source_id=str(index),
                    boxes=[tuple(b) for b in boxes.tolist()],
                    labels=classes.tolist(), texts=["x"] * len(classes),
                    is_crowd=[0] * len(classes),
                    areas=[1.0] * len(classes))))
                index += 1
    return str(path)


def test_saved_model_and_tflite_score_what_the_checkpoint_scores(
        fixtures_dir, pseudo_labelled_records, tmp_path, capsys):
    from efficientdet_tf.serving.tflite_export import export_tflite
    model, config = small_model(fixtures_dir)
    checkpoint = evaluate(Detector(model, config), pseudo_labelled_records,
                          batch_size=2)
    # The eval pipeline resizes the decoded image in float, the serving
    # function it was labelled by from uint8: near, not equal.
    assert checkpoint["AP50"] > 0.85
    saved = evaluate_export(str(small_export(fixtures_dir)),
                            pseudo_labelled_records, config,
                            output_dir=str(tmp_path / "saved"))
    assert saved["AP"] == pytest.approx(1.0)  # the labelling computation
    assert (tmp_path / "saved" / report.PER_CLASS_CSV).is_file()
    tflite = export_tflite(model, config, str(tmp_path / "tflite"), ["fp32"])
    lite = evaluate_export(tflite["fp32"], pseudo_labelled_records, config,
                           max_images=2)
    # The client letterbox rounds pixels to uint8: boxes move a little.
    assert lite["AP50"] > 0.85
    assert "efficientdet-d0_fp32.tflite: 2 images" in capsys.readouterr().out


def test_a_missing_export_is_named(fixtures_dir, pseudo_labelled_records,
                                   tmp_path):
    _, config = small_model(fixtures_dir)
    with pytest.raises(FileNotFoundError, match="no model at"):
        evaluate_export(str(tmp_path / "nothing.tflite"),
                        pseudo_labelled_records, config)


def test_eval_saved_model_runmode(fixtures_dir, pseudo_labelled_records,
                                  tmp_path):
    from tests.serving.serving_helpers import run_cli
    export = small_export(fixtures_dir)
    done = run_cli("--runmode=eval_saved_model", f"--saved_model_dir={export}",
                   f"--validation_file_pattern={pseudo_labelled_records}",
                   f"--output_dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "COCO box metrics: 4 images" in done.stdout
    assert (tmp_path / "eval" / report.PER_CLASS_MARKDOWN).is_file()
    missing = run_cli("--runmode=eval_saved_model", f"--saved_model_dir={export}")
    assert missing.returncode == 2
    assert "--runmode=eval_saved_model needs --validation_file_pattern" in (
        missing.stderr)
