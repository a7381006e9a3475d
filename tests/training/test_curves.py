"""training_curves.png from the run's own event files: scalars read back
(later values win, a cut file is read up to the cut) and drawn."""
from __future__ import annotations

import os

import tensorflow as tf
from PIL import Image

from efficientdet_tf.training import curves
from efficientdet_tf.utils import summaries


def write_scalars(folder, values):
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for tag, step, value in values:
            summaries.scalar(tag, value, step)
        summaries.image("picture", tf.zeros([4, 4, 3], tf.uint8).numpy(), 1)
    writer.close()


def test_read_scalars_keeps_the_latest_value_of_a_step(tmp_path):
    write_scalars(tmp_path, [("loss/loss", 1, 3.0), ("loss/loss", 2, 2.0)])
    [older] = tmp_path.glob("events.out.tfevents.*")
    # A resumed run writes a newer file, repeating step 2. Opened in the
    # same second, the two names order by a random id: make the newer one
    # sort first, as it did in a CI run.
    write_scalars(tmp_path, [("loss/loss", 2, 1.5), ("loss/loss", 3, 1.0)])
    [newer] = set(tmp_path.glob("events.out.tfevents.*")) - {older}
    newer.rename(tmp_path / "events.out.tfevents.0000000001.host.1.0.v2")
    assert summaries.read_scalars(str(tmp_path)) == {
        "loss/loss": {1: 3.0, 2: 1.5, 3: 1.0}}


def test_a_cut_event_file_is_read_up_to_the_cut(tmp_path):
    write_scalars(tmp_path, [("AP", 1, 0.25), ("AP", 2, 0.5)])
    [path] = tmp_path.glob("events.out.tfevents.*")
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # a killed writer's last record
    scalars = summaries.read_scalars(str(tmp_path))
    assert scalars["AP"][1] == 0.25


def test_history_and_png(tmp_path):
    write_scalars(tmp_path / "train", [("loss/loss", 10, 2.0),
                                       ("loss/cls_loss", 10, 1.0),
                                       ("learning_rate", 10, 0.125),
                                       ("images_per_second", 10, 5.0)])
    write_scalars(tmp_path / "eval", [("AP", 10, 0.25), ("AP50", 10, 0.5),
                                      ("APs", 10, 0.1)])
    assert curves.training_history(str(tmp_path)) == [
        {"step": 10, "loss": 2.0, "cls_loss": 1.0, "learning_rate": 0.125},
        {"step": 10, "AP": 0.25, "AP50": 0.5}]
    path = curves.write_training_curves(str(tmp_path))
    assert path == os.path.join(str(tmp_path), curves.CURVES_FILE)
    with Image.open(path) as picture:
        assert picture.width > 400 and picture.height > 200
