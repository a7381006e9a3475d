"""Checkpoint loading and saving, checked against the official D0 fixture.

The fixture weights are random but make every variable matter, so matching the
official outputs proves each tensor went to the right variable.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.model import build_model

from tests.conftest import REPO_ROOT

TOLERANCE = 1e-3
D0_OVERRIDES = {"image_size": 256}
CLASS_PREDICT = "class_net/class-predict"



@pytest.fixture(scope="module")
def d0_dir(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "automl_d0_256x256"


@pytest.fixture(scope="module")
def d0_ckpt(d0_dir: pathlib.Path) -> str:
    return str(d0_dir / "ckpt" / "model")


@pytest.fixture(scope="module")
def d0_model() -> keras.Model:
    """One D0 shared by the tests; each loads the weights it needs first."""
    return build_model(get_config("efficientdet-d0", D0_OVERRIDES))


@pytest.fixture(scope="module")
def d0_input(d0_dir: pathlib.Path) -> np.ndarray:
    return np.load(d0_dir / "input.npy")


def outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    class_outputs, box_outputs = model(images, training=False)
    result = {f"class_{i}": np.asarray(x) for i, x in enumerate(class_outputs)}
    result.update({f"box_{i}": np.asarray(x)
                   for i, x in enumerate(box_outputs)})
    return result


def max_diff(ours: dict[str, np.ndarray], d0_dir: pathlib.Path,
             kind: str) -> float:
    """Largest |ours - official| over every class/box level."""
    official = np.load(d0_dir / f"outputs_{kind}.npz")
    assert sorted(ours) == sorted(official.keys())
    return max(float(np.abs(ours[k] - official[k]).max()) for k in ours)


def assert_matches(model: keras.Model, images: np.ndarray,
                   d0_dir: pathlib.Path, kind: str) -> None:
    assert max_diff(outputs(model, images), d0_dir, kind) <= TOLERANCE


def save_official(prefix: pathlib.Path, tensors: dict[str, np.ndarray]) -> str:
    """Writes a TF1-style name-based checkpoint, as automl archives are."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return str(prefix)


def fixture_tensors(ckpt: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(ckpt)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def test_official_checkpoint_reproduces_ema_and_raw_outputs(
        d0_model, d0_ckpt, d0_dir, d0_input):
    report = ckpt_lib.load_weights(d0_model, d0_ckpt)
    assert report.format == "official" and report.used_ema
    assert len(report.loaded) == 709 and not report.missing
    assert not report.skipped and not report.unused
    meta = json.loads((d0_dir / "meta.json").read_text())
    assert report.ignored == sorted(meta["checkpoint_extras"])
    ema_out = outputs(d0_model, d0_input)
    assert max_diff(ema_out, d0_dir, "ema") <= TOLERANCE

    report = ckpt_lib.load_weights(d0_model, d0_ckpt, use_ema=False)
    assert not report.used_ema and len(report.loaded) == 709
    raw_out = outputs(d0_model, d0_input)
    assert max_diff(raw_out, d0_dir, "raw") <= TOLERANCE
    # Loading the wrong variant must fail the comparison above.
    assert max_diff(raw_out, d0_dir, "ema") > 100 * TOLERANCE
    assert max_diff(ema_out, d0_dir, "raw") > 100 * TOLERANCE


def test_fine_tuning_skips_exactly_the_class_predict_layer(d0_ckpt):
    model = build_model(get_config("efficientdet-d0",
                                   {**D0_OVERRIDES, "num_classes": 5}))
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=f"{CLASS_PREDICT}/pointwise_kernel"):
        ckpt_lib.load_weights(model, d0_ckpt)
    report = ckpt_lib.load_weights(model, d0_ckpt, skip_mismatch=True)
    assert report.skipped == {
        f"{CLASS_PREDICT}/pointwise_kernel": ((1, 1, 64, 810), (1, 1, 64, 45)),
        f"{CLASS_PREDICT}/bias": ((810,), (45,)),
    }
    assert f"{CLASS_PREDICT}/depthwise_kernel" in report.loaded
    assert len(report.loaded) == 707 and not report.missing
    assert f"{CLASS_PREDICT}/bias" in report.summary()


def test_checkpoint_of_another_model_is_a_model_mismatch(d0_ckpt):
    model = build_model(get_config("efficientdet-d1", D0_OVERRIDES))
    with pytest.raises(ckpt_lib.ModelMismatchError, match=(
            "model mismatch: the checkpoint's backbone is efficientnet-b0 "
            "but model efficientdet-d1 uses efficientnet-b1")):
        ckpt_lib.load_weights(model, d0_ckpt, skip_mismatch=True)


def test_same_backbone_other_width_is_a_model_mismatch(d0_ckpt):
    model = build_model(get_config("efficientdet-d0",
                                   {**D0_OVERRIDES, "fpn_num_filters": 88}))
    with pytest.raises(ckpt_lib.ModelMismatchError, match="model mismatch"):
        ckpt_lib.load_weights(model, d0_ckpt, skip_mismatch=True)


def test_missing_variable_is_an_error_naming_it(d0_model, d0_ckpt, tmp_path):
    tensors = fixture_tensors(d0_ckpt)
    for key in ("box_net/box-predict/bias",
                "box_net/box-predict/bias/ExponentialMovingAverage"):
        del tensors[key]
    prefix = save_official(tmp_path / "model", tensors)
    before = d0_model.weights[0].numpy().copy()
    d0_model.weights[0].assign(before + 1.0)
    with pytest.raises(ckpt_lib.CheckpointError,
                       match="model: 1 variable.* not in the checkpoint: "
                             "box_net/box-predict/bias$"):
        ckpt_lib.load_weights(d0_model, prefix)
    # A failed load changes nothing.
    np.testing.assert_array_equal(d0_model.weights[0].numpy(), before + 1.0)


def test_backbone_only_checkpoint_loads_only_the_backbone(
        d0_model, d0_ckpt, tmp_path):
    tensors = {k: v for k, v in fixture_tensors(d0_ckpt).items()
               if k.startswith("efficientnet-b0/")
               and not k.endswith("Momentum")}
    # What ImageNet checkpoints add: the classifier the detector lacks.
    tensors["efficientnet-b0/head/dense/kernel"] = np.ones((1280, 1000),
                                                           "float32")
    tensors["global_step"] = np.int64(10)
    prefix = save_official(tmp_path / "backbone", tensors)
    variables = ckpt_lib.official_variable_map(d0_model)
    head_bias = variables["box_net/box-predict/bias"]
    head_bias.assign(np.full(head_bias.shape, 7.0, "float32"))

    report = ckpt_lib.load_weights(d0_model, prefix)
    assert report.backbone_only and report.used_ema
    assert len(report.loaded) == 304
    assert all(n.startswith("efficientnet-b0/") for n in report.loaded)
    assert len(report.missing) == 709 - 304
    assert report.unused == ["efficientnet-b0/head/dense/kernel"]
    assert "BiFPN and heads keep their initial values" in report.summary()
    name = "efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel"
    np.testing.assert_array_equal(
        variables[name].numpy(), tensors[name + ckpt_lib.EMA_SUFFIX])
    np.testing.assert_array_equal(head_bias.numpy(), 7.0)


def copy_checkpoint(d0_dir: pathlib.Path, target: pathlib.Path,
                    stem: str = "model") -> None:
    target.mkdir(exist_ok=True)
    for src in (d0_dir / "ckpt").glob("model.*"):
        shutil.copy(src, target / src.name.replace("model", stem, 1))


def test_directory_paths(d0_dir, tmp_path):
    folder = tmp_path / "archive"
    copy_checkpoint(d0_dir, folder)
    assert ckpt_lib.resolve_checkpoint(folder) == str(folder / "model")
    # Downloaded archives: state file naming the author's disk, or none.
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/train/model.ckpt-300"\n')
    assert ckpt_lib.resolve_checkpoint(folder) == str(folder / "model")
    (folder / "checkpoint").unlink()
    assert ckpt_lib.resolve_checkpoint(folder) == str(folder / "model")
    assert ckpt_lib.resolve_checkpoint(folder / "model.index") == str(
        folder / "model")
    copy_checkpoint(d0_dir, folder, stem="other")
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=f"{folder} holds 2 checkpoints.*model.*other"):
        ckpt_lib.resolve_checkpoint(folder)
    (folder / "checkpoint").write_text('model_checkpoint_path: "other"\n')
    assert ckpt_lib.resolve_checkpoint(folder) == str(folder / "other")


def write_stub_checkpoints(folder: pathlib.Path, names: list[str]) -> None:
    """Tiny checkpoints plus a state file naming the last one, relative to
    ``folder`` as ``save_native`` writes it: path resolution reads only
    the state file and the ``.index`` files."""
    for name in names:
        tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(folder / name))
    (folder / "checkpoint").write_text(
        f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
            f'all_model_checkpoint_paths: "{n}"\n' for n in names))


def test_relative_directory_with_several_checkpoints(tmp_path, monkeypatch):
    """The state file's entries are relative to the folder: a relative
    folder must not be joined onto them twice (demo.sh's export failed)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "model").mkdir(parents=True)
    write_stub_checkpoints(tmp_path / "run" / "model", ["ckpt-1", "ckpt-2"])
    assert ckpt_lib.resolve_checkpoint("run/model") == os.path.join(
        "run", "model", "ckpt-2")
    assert ckpt_lib.resolve_checkpoint("run/model/") == os.path.join(
        "run", "model", "ckpt-2")


def test_missing_paths_are_named(d0_model, tmp_path):
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=f"no checkpoint at {tmp_path / 'nope'}"):
        ckpt_lib.load_weights(d0_model, tmp_path / "nope")
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=f"no checkpoint in directory {tmp_path}"):
        ckpt_lib.load_weights(d0_model, tmp_path)


def test_native_round_trip_keeps_outputs_and_ema(
        d0_model, d0_ckpt, d0_dir, d0_input, tmp_path):
    ckpt_lib.load_weights(d0_model, d0_ckpt)
    expected = outputs(d0_model, d0_input)
    prefix, report = ckpt_lib.convert_checkpoint(
        "efficientdet-d0", d0_dir / "ckpt", tmp_path / "lib", D0_OVERRIDES)
    assert report.used_ema and prefix == str(tmp_path / "lib" / "ckpt-1")
    assert "num_classes: 90" in (tmp_path / "lib" / "config.yaml").read_text()

    fresh = build_model(get_config("efficientdet-d0", D0_OVERRIDES))
    report = ckpt_lib.load_weights(fresh, tmp_path / "lib")
    assert report.format == "native" and len(report.loaded) == 709
    assert not (report.missing or report.unused or report.used_ema)
    for key, value in outputs(fresh, d0_input).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)

    # A native checkpoint may carry EMA shadows and training state.
    reader = tf.train.load_checkpoint(d0_ckpt)
    shadows = {n: keras.Variable(reader.get_tensor(n + ckpt_lib.EMA_SUFFIX))
               for n in ckpt_lib.official_variable_map(d0_model)}
    ckpt_lib.load_weights(d0_model, d0_ckpt, use_ema=False)
    extras = {"optimizer": tf.train.Checkpoint(step=tf.Variable(3))}
    prefix = ckpt_lib.save_native(d0_model, tmp_path / "train", ema=shadows,
                                  extras=extras)
    report = ckpt_lib.load_weights(d0_model, prefix)
    assert report.used_ema and report.ignored and not report.unused
    assert_matches(d0_model, d0_input, d0_dir, "ema")
    ckpt_lib.load_weights(d0_model, prefix, use_ema=False)
    assert_matches(d0_model, d0_input, d0_dir, "raw")


@pytest.mark.slow
def test_convert_cli(d0_model, d0_dir, d0_input, tmp_path):
    model_dir = tmp_path / "cli"
    command = [sys.executable, str(REPO_ROOT / "model_inspect.py"),
               "--runmode=convert_ckpt", "--model_name=efficientdet-d0",
               f"--ckpt_path={d0_dir / 'ckpt'}", f"--model_dir={model_dir}",
               "--hparams=image_size=256"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded 709" in done.stdout
    report = ckpt_lib.load_weights(d0_model, model_dir)
    assert report.format == "native"
    assert_matches(d0_model, d0_input, d0_dir, "ema")

    bad = subprocess.run(command[:-2] + [f"--ckpt_path={tmp_path / 'none'}",
                                         f"--model_dir={model_dir}"],
                         capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"model_inspect.py: error: no checkpoint at {tmp_path / 'none'}: "
        "expected a directory holding one, or a prefix P with a P.index file")


def test_cli_usage_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    import model_inspect
    with pytest.raises(SystemExit) as exit_info:
        model_inspect.main(["--runmode=convert_ckpt", "--ckpt_path=x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "model_inspect.py: error: --runmode=convert_ckpt needs --model_dir "
        "(see --help)\n")


@pytest.mark.parametrize("failure", ["write", "move"])
def test_crash_mid_save_keeps_previous_checkpoint(
        d0_model, d0_ckpt, d0_dir, d0_input, tmp_path, monkeypatch, failure):
    ckpt_lib.load_weights(d0_model, d0_ckpt)
    first = ckpt_lib.save_native(d0_model, tmp_path)
    ckpt_lib.load_weights(d0_model, d0_ckpt, use_ema=False)
    if failure == "write":  # dies while TensorFlow writes the files
        def broken_write(self, *args, **kwargs):
            raise OSError("killed mid-save")
        monkeypatch.setattr(tf.train.Checkpoint, "write", broken_write)
    else:  # dies after moving the data file, before the index
        real_rename = tf.io.gfile.rename

        def rename_all_but_index(src, dst, overwrite=False):
            if src.endswith(".index"):
                raise OSError("killed mid-save")
            real_rename(src, dst, overwrite)
        monkeypatch.setattr(tf.io.gfile, "rename", rename_all_but_index)
    with pytest.raises(OSError, match="killed mid-save"):
        ckpt_lib.save_native(d0_model, tmp_path)
    monkeypatch.undo()

    assert not list(tmp_path.glob(".*partial*"))
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-1.index"]
    report = ckpt_lib.load_weights(d0_model, tmp_path)
    assert report.path == first
    assert_matches(d0_model, d0_input, d0_dir, "ema")
    assert ckpt_lib.save_native(d0_model, tmp_path).endswith("ckpt-2") == (
        failure == "write")


@pytest.mark.parametrize("max_level", [7, 6])
def test_official_checkpoint_into_a_p2_model_holds_back_the_bifpn(
        d0_ckpt, tmp_path, max_level):
    """An official checkpoint (levels 3..7) into a min_level 2 model: the
    backbone, resample_p6 and the heads (convolutions shared by all levels,
    batch norms per level) load. The BiFPN cannot: automl numbers its nodes
    by the level count, so an equal name is another node, and with levels
    2..6 nearly all of the checkpoint's BiFPN names recur with equal shapes.
    The BiFPN and the level-2 head batch norms are held back and named;
    without skip_mismatch that is an error that changes nothing."""
    model = build_model(get_config("efficientdet-d0", {
        "image_size": 128, "min_level": 2, "max_level": max_level}))
    variables = ckpt_lib.official_variable_map(model)
    initial = {name: v.numpy().copy() for name, v in variables.items()}
    levels = rf"levels 3\.\.7, the model's 2\.\.{max_level}"
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=rf"{levels}.*fpn_cells.*skip_mismatch=True"):
        ckpt_lib.load_weights(model, d0_ckpt)
    assert all(np.array_equal(v.numpy(), initial[n])
               for n, v in variables.items())

    report = ckpt_lib.load_weights(model, d0_ckpt, skip_mismatch=True)
    held = {n for n in variables
            if n.startswith("fpn_cells/") or "-bn-2/" in n}
    assert set(report.other_levels) == held
    assert set(report.loaded) == set(variables) - held
    assert not report.missing and not report.skipped
    assert "resample_p6/conv2d/kernel" in report.loaded
    assert "class_net/class-0-bn-3/gamma" in report.loaded
    tensors = fixture_tensors(d0_ckpt)
    for name in report.loaded:
        np.testing.assert_array_equal(variables[name].numpy(),
                                      tensors[name + ckpt_lib.EMA_SUFFIX])
    for name in held:
        np.testing.assert_array_equal(variables[name].numpy(), initial[name])
    summary = report.summary()
    assert re.search(levels, summary), summary
    for scope in ("fpn_cells", "class_net/class-0-bn-2", "box_net/box-2-bn-2"):
        assert scope in summary
    assert ("class_net/class-0-bn-7/gamma" in report.unused) == (max_level == 6)

    # A checkpoint of the P2 model itself loads whole.
    again = ckpt_lib.load_weights(model, ckpt_lib.save_native(model, tmp_path))
    assert len(again.loaded) == len(variables) and not again.other_levels
