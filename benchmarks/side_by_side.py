"""Ours beside the official EfficientDet, in one invocation: the ratios
this project's speed claims are made of.

    python benchmarks/side_by_side.py --automl_dir ~/automl/efficientdet
    python benchmarks/side_by_side.py --what train --rounds 3 --batch_size 4

Machines here differ by up to 2.5x and share their cores, so a number
measured elsewhere or at another time says little; a ratio measured in the
same run, alternating, does. Each round runs every measurement once for us
and once for automl, in fresh processes (a process's peak RSS is then its
own), ours first in odd rounds and automl first in even ones. The table
gives the median over rounds and the ratio:

* ``infer``: milliseconds per image, batch 1, uint8 image in, detections
  out: our exported SavedModel's ``serving_default`` (``inference.py``,
  class-agnostic soft-NMS like automl's "global" mode) against automl's
  ``EfficientDetModel`` with its pre-processing and NMS
  (``automl_reference.py infer``);
* ``train``: images per second of the training step on one fixed batch,
  EMA off (``train_throughput.py --fixed_batch`` against ``automl_reference.py
  train``), and each process's peak RSS.

``--ours_hparams`` adds config overrides to our side (for example a
reduced-precision variant); automl always runs its defaults. See
``automl_reference.py`` for getting the official code and tf-keras.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys

from automl_reference import AUTOML_ENV  # (benchmarks/)
from results import median, parse_result  # (benchmarks/)

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One quantity timed on both sides: the commands and the result key."""
    name: str
    key: str
    unit: str
    higher_is_better: bool
    ours: list[str]
    official: list[str]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--automl_dir", default=os.environ.get(AUTOML_ENV),
                        help=f"automl's efficientdet/ folder (default ${AUTOML_ENV})")
    parser.add_argument("--what", default="infer,train",
                        help="comma-separated: infer, train")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternations (>= 2 for a median worth reporting)")
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=4, help="training batch")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--runs", type=int, default=30, help="timed inference calls")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ours_hparams", default="",
                        help="extra config overrides for our side only")
    return parser.parse_args(argv)


def measurements(args: argparse.Namespace) -> list[Measurement]:
    python, size = sys.executable, str(args.image_size)
    common = ["--threads", str(args.threads)]
    official = [python, str(HERE / "automl_reference.py"),
                "--automl_dir", args.automl_dir, "--image_size", size, *common]
    extra = f",{args.ours_hparams}" if args.ours_hparams else ""
    chosen = {}
    chosen["infer"] = Measurement(
        "SavedModel end to end, batch 1", "ms", "ms/image", False,
        [python, str(HERE / "inference.py"), "--runs", str(args.runs), *common,
         "--hparams", f"image_size={size},nms_configs.per_class=false{extra}"],
        [*official, "infer", "--runs", str(args.runs)])
    training = ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    chosen["train"] = Measurement(
        f"training step, batch {args.batch_size}, fixed batch, EMA off",
        "images_per_second", "images/s", True,
        [python, str(HERE / "train_throughput.py"), "--fixed_batch",
         "--image_size", size, *training, *common]
        + (["--hparams", args.ours_hparams] if args.ours_hparams else []),
        [*official, "train", *training])
    wanted = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(chosen))
    if unknown:
        sys.exit(f"error: --what {','.join(unknown)}: known are {', '.join(chosen)}")
    return [chosen[w] for w in wanted]


def run(command: list[str]) -> dict:
    """One measurement in a fresh process; exits with its output's tail if
    it fails (a missing automl folder or tf-keras says so there)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [
                   str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    # Our side runs Keras 3; automl_reference.py sets it for its own process.
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, check=False)
    result = parse_result(done.stdout)
    if done.returncode or result is None:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        sys.exit(f"error: {' '.join(command[1:3])} failed (exit "
                 f"{done.returncode}):\n" + "\n".join(tail))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.automl_dir:
        sys.exit(f"error: pass --automl_dir or set ${AUTOML_ENV} to automl's "
                 "efficientdet/ folder (automl_reference.py says how to get it)")
    chosen = measurements(args)
    results = {m.name: {"ours": [], "official": []} for m in chosen}
    for round_index in range(args.rounds):
        sides = ["ours", "official"] if round_index % 2 == 0 else ["official", "ours"]
        for measurement in chosen:
            for side in sides:
                result = run(getattr(measurement, side))
                results[measurement.name][side].append(result)
                print(f"round {round_index + 1} {side:8s} {measurement.name}: "
                      f"{result[measurement.key]:.3f} {measurement.unit}, peak RSS "
                      f"{result['peak_rss_gb']:.2f} GB", flush=True)
    print(f"\nmedian of {args.rounds} alternating rounds, D0 {args.image_size}x"
          f"{args.image_size}, {args.threads} threads"
          + (f", ours with {args.ours_hparams}" if args.ours_hparams else ""))
    print("| what | ours | official automl | ratio |\n|---|---|---|---|")
    for measurement in chosen:
        runs = results[measurement.name]
        ours = median([r[measurement.key] for r in runs["ours"]])
        theirs = median([r[measurement.key] for r in runs["official"]])
        kind = "throughput" if measurement.higher_is_better else "time"
        print(f"| {measurement.name} | {ours:.3g} {measurement.unit} | {theirs:.3g} "
              f"{measurement.unit} | {ours / theirs:.2f}x the {kind} |")
        ours_rss = median([r["peak_rss_gb"] for r in runs["ours"]])
        theirs_rss = median([r["peak_rss_gb"] for r in runs["official"]])
        print(f"| peak RSS of that process | {ours_rss:.2f} GB | {theirs_rss:.2f} GB "
              f"| {ours_rss / theirs_rss:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
