"""One exit policy for every command (efficientdet_tf.cli.command): the
library's errors, OSErrors and TensorFlow op errors are one line and exit 1,
Ctrl-C exits 130 saying what was kept, and anything else (a bug) escapes
with its traceback. Each command runs in process with the library function
it calls replaced, so no test here trains or converts anything."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from types import ModuleType
from typing import NamedTuple

import pytest
import tensorflow as tf

import efficientdet_tf
from efficientdet_tf.cli import (create_coco_tfrecord, create_pascal_tfrecord,
                                 inspect_tfrecord, make_demo_dataset,
                                 model_inspect, split_kfold, train,
                                 voc_to_coco)
from efficientdet_tf.config import ConfigError
from efficientdet_tf.datasets.record_check import RecordError
from efficientdet_tf.datasets.validation import ConversionError
from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.modeling.checkpoint import CheckpointError


class Case(NamedTuple):
    command: ModuleType
    argv: list[str]
    target: str  # the library function the command calls first
    library_error: EfficientDetError  # one it can raise

    @property
    def prog(self) -> str:
        return self.command.PROG


MESSAGE = "records/a.tfrecord: bad;\n  re-run the converter"
ONE_LINE = "records/a.tfrecord: bad; re-run the converter"

CASES = {
    "train": Case(train, ["--model_dir=run", "--training_file_pattern=x"],
                  "efficientdet_tf.training.runner.resolve_config",
                  ConfigError(MESSAGE)),
    "model_inspect": Case(model_inspect, ["--runmode=dry"],
                          "efficientdet_tf.serving.export.load_model",
                          CheckpointError(MESSAGE)),
    "create_coco_tfrecord": Case(
        create_coco_tfrecord, ["--image_dir=i", "--object_annotations_file=a",
                               "--output_file_prefix=o"],
        "efficientdet_tf.datasets.coco.convert_coco", ConversionError(MESSAGE)),
    "create_pascal_tfrecord": Case(
        create_pascal_tfrecord, ["--annotations_dir=a", "--output_path=o"],
        "efficientdet_tf.datasets.voc.convert_pascal", ConversionError(MESSAGE)),
    "inspect_tfrecord": Case(
        inspect_tfrecord, ["--file_pattern=x"],
        "efficientdet_tf.datasets.record_inspect.inspect_records",
        RecordError(MESSAGE)),
    "make_demo_dataset": Case(
        make_demo_dataset, ["--output_dir=o"],
        "efficientdet_tf.datasets.demo.make_demo_dataset",
        ConversionError(MESSAGE)),
    "split_kfold": Case(
        split_kfold, ["--input_file_pattern=x", "--num_folds=3",
                      "--output_dir=o"],
        "efficientdet_tf.datasets.kfold.scan_records", RecordError(MESSAGE)),
    "voc_to_coco": Case(
        voc_to_coco, ["--annotations_dir=a", "--output_json_path=o"],
        "efficientdet_tf.datasets.voc.write_voc_coco_json",
        ConversionError(MESSAGE)),
}


def run_raising(case: Case, error: BaseException, monkeypatch, capsys
                ) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``case`` when its library call
    raises ``error``."""
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(case.target, fail)
    code = case.command.main(case.argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_error_is_one_line(name, monkeypatch, capsys):
    case = CASES[name]
    code, out, err = run_raising(case, case.library_error, monkeypatch, capsys)
    assert (code, out) == (1, "")
    assert err == f"{case.prog}: error: {ONE_LINE}\n"


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("error", [
    FileNotFoundError(2, "No such file or directory", "records/a.tfrecord"),
    tf.errors.DataLossError(None, None, "records/a.tfrecord: corrupted "
                            "record\n\t [[{{node IteratorGetNext}}]]")],
    ids=["OSError", "OpError"])
def test_os_and_tensorflow_errors_are_one_line(name, error, monkeypatch,
                                               capsys):
    """The dataset commands used to print these with a traceback."""
    case = CASES[name]
    code, _, err = run_raising(case, error, monkeypatch, capsys)
    assert code == 1
    assert err.count("\n") == 1 and "records/a.tfrecord" in err
    assert err.startswith(f"{case.prog}: error: ") and "node" not in err


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug")],
                         ids=["ValueError", "KeyError"])
def test_other_exceptions_escape_with_their_traceback(name, error,
                                                      monkeypatch, capsys):
    """main.py used to catch every ValueError, so a bug in the library
    looked like a mistake in the user's flags."""
    with pytest.raises(type(error), match="a bug"):
        run_raising(CASES[name], error, monkeypatch, capsys)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name, kept", [
    ("train", "; rerun the same command to resume from the newest "
     "checkpoint in run"),
    ("create_coco_tfrecord", "; no partial output was kept"),
    ("create_pascal_tfrecord", "; no partial output was kept"),
    ("voc_to_coco", "; no partial output was kept"),
    ("model_inspect", ""), ("inspect_tfrecord", ""), ("make_demo_dataset", "")])
def test_interrupt_exits_130_saying_what_was_kept(name, kept, monkeypatch,
                                                  capsys):
    case = CASES[name]
    code, _, err = run_raising(case, KeyboardInterrupt(), monkeypatch, capsys)
    assert code == 130
    assert err == f"{case.prog}: interrupted{kept}\n"


@pytest.mark.parametrize("command, argv", [
    (create_pascal_tfrecord, ["--output_path=o"]),
    (voc_to_coco, ["--output_json_path=o", "--data_dir=d",
                   "--annotations_dir=a"])])
def test_flags_that_do_not_go_together_are_a_usage_error(command, argv,
                                                         capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"{command.PROG}: error: give either --data_dir (VOC devkit) or "
        "--annotations_dir (folder of XML files) (see --help)\n")


def test_errors_name_the_command_the_user_typed(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/efficientdet-voc-to-coco",
                                      "--output_json_path=o"])
    with pytest.raises(SystemExit):
        voc_to_coco.main()
    assert capsys.readouterr().err.startswith(
        "efficientdet-voc-to-coco: error: give either --data_dir")


def library_exceptions() -> list[type[BaseException]]:
    """Every exception class a module of the package defines."""
    found = []
    for module in pkgutil.walk_packages(efficientdet_tf.__path__,
                                        "efficientdet_tf."):
        members = vars(importlib.import_module(module.name)).values()
        found += [m for m in members if inspect.isclass(m)
                  and issubclass(m, BaseException)
                  and m.__module__ == module.name]
    return found


def test_every_library_error_is_in_the_family():
    """What the commands catch as "the user's to fix" is the whole family;
    the classes that were ValueErrors stay ValueErrors for existing
    ``except ValueError`` callers."""
    found = {cls.__name__: cls for cls in library_exceptions()}
    value_errors = {"ConfigError", "CheckpointError", "ModelMismatchError",
                    "ModelDirError", "StrategyError", "RecordError",
                    "InferenceError", "ExportError"}
    assert value_errors | {"RunError", "TrainingError", "ConversionError",
                           "TrainingDivergedError", "ImageError",
                           "UsageError"} <= found.keys()
    outside = [name for name, cls in found.items()
               if not issubclass(cls, EfficientDetError)]
    assert not outside
    assert {name for name, cls in found.items()
            if issubclass(cls, ValueError)} == value_errors
