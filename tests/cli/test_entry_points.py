"""The commands exist both ways: as the entry points ``pip install`` makes,
and as the scripts of a clone, which run the same functions."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

from tests.conftest import REPO_ROOT

# entry point -> (module of efficientdet_tf.cli, script of a clone)
COMMANDS = {
    "efficientdet-train": ("train", "main.py"),
    "efficientdet-inspect": ("model_inspect", "model_inspect.py"),
    "efficientdet-convert-coco": ("create_coco_tfrecord",
                                  "dataset/create_coco_tfrecord.py"),
    "efficientdet-convert-voc": ("create_pascal_tfrecord",
                                 "dataset/create_pascal_tfrecord.py"),
    "efficientdet-inspect-records": ("inspect_tfrecord",
                                     "dataset/inspect_tfrecord.py"),
    "efficientdet-demo-data": ("make_demo_dataset",
                               "dataset/make_demo_dataset.py"),
    "efficientdet-voc-to-coco": ("voc_to_coco", "dataset/voc_to_coco.py"),
    "efficientdet-analyze-dataset": ("analyze_dataset",
                                     "dataset/analyze_dataset.py"),
    "efficientdet-split-kfold": ("split_kfold", "dataset/split_kfold.py"),
}


def installed_commands() -> dict[str, metadata.EntryPoint]:
    """The console scripts of the installed distribution (the test runner's
    install is editable, so they point into this checkout)."""
    entry_points = metadata.distribution("efficientdet_tf").entry_points
    return {e.name: e for e in entry_points if e.group == "console_scripts"}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python <script> args`` from the checkout, as the README runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args],
                          capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120, check=False)


def test_every_command_is_an_entry_point():
    installed = {name: e.value for name, e in installed_commands().items()}
    assert installed == {
        name: f"efficientdet_tf.cli.{module}:main"
        for name, (module, _) in COMMANDS.items()}, (
        "setup.py's console_scripts differ from the installed ones: "
        "re-run `pip install -e .`")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_entry_point_prints_help_under_its_own_name(name, monkeypatch, capsys):
    command = installed_commands()[name].load()
    # What pip's generated script does: call main() with argv in sys.argv.
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{name}", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_clone_script_prints_help(name):
    script = COMMANDS[name][1]
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {os.path.basename(script)} ")


def test_clone_script_reports_a_library_error_in_one_line(tmp_path):
    done = run_script("dataset/voc_to_coco.py",
                      f"--annotations_dir={tmp_path / 'none'}",
                      f"--output_json_path={tmp_path / 'out.json'}")
    assert done.returncode == 1
    assert done.stderr == (
        f"voc_to_coco.py: error: {tmp_path / 'none'}: no such folder\n")
