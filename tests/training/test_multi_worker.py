"""``--strategy=multi_worker``: two worker processes on localhost, joined by
``TF_CONFIG`` over loopback ports, train the same model in lock step.

Each worker reads its own half of the records, so the workers only end with
the same weights when gradients really are all-reduced across processes
(and the EMA follows the same weights). Worker 0 is the chief: it alone
writes checkpoints into its model_dir.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.training.test_train import TRAIN, make_demo_records

WORKER = """
import io, sys, numpy as np, tensorflow as tf
tf.config.optimizer.set_experimental_options({{"disable_meta_optimizer": True}})
from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.checkpoint import official_variable_map
from efficientdet_tf.training.strategy import is_chief, make_strategy
from efficientdet_tf.training.trainer import Trainer, TrainOptions
strategy = make_strategy("multi_worker")
options = TrainOptions(model_dir=sys.argv[1], training_file_pattern={pattern!r},
                       train_batch_size=4, num_examples_per_epoch=8,
                       seed=0, log_every_steps=1)
stream = io.StringIO()
trainer = Trainer(get_config("efficientdet-d0", {train!r}), options, strategy,
                  stream=stream)
step = trainer.train(until_step=3)
values = {{"model/" + n: v.numpy() for n, v in
          official_variable_map(trainer.model).items()}}
values.update({{"ema/" + n: v.numpy() for n, v in trainer.ema.shadows.items()}})
np.savez(sys.argv[2], **values)
print("replicas", strategy.num_replicas_in_sync, "chief", is_chief(strategy),
      "step", step)
print(stream.getvalue())
"""


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on right now (bound, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    # Two files, so each worker reads a different one (file sharding).
    pattern = make_demo_records(root / "data", num_train=8, num_shards=2)
    # grad_checkpoint: its recomputed backward (and synchronized batch
    # norms inside it) must hold across processes too.
    train = {**TRAIN, "moving_average_decay": 0.9, "grad_checkpoint": True}
    script = WORKER.format(pattern=pattern, train=train)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers},
                     "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config),
               "PYTHONPATH": str(REPO_ROOT), "CUDA_VISIBLE_DEVICES": "",
               "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", script, str(root / f"model-{index}"),
             str(root / f"weights-{index}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for index, (code, out, err) in enumerate(outputs):
        assert code == 0, f"worker {index} failed:\n{err[-3000:]}"
    weights = [dict(np.load(root / f"weights-{i}.npz")) for i in range(2)]
    return root, [out for _, out, _ in outputs], weights


def test_two_workers_train_in_lock_step(two_worker_run):
    _, outputs, _ = two_worker_run
    assert "replicas 2 chief True step 3" in outputs[0]
    assert "replicas 2 chief False step 3" in outputs[1]
    # The log states the global batch across both workers.
    assert "global batch 4 on 2 replica(s)" in outputs[0]


def test_both_workers_end_with_the_same_weights(two_worker_run):
    _, _, (first, second) = two_worker_run
    assert first.keys() == second.keys()
    assert any(k.startswith("ema/") for k in first)
    different = [k for k in first if not np.allclose(first[k], second[k],
                                                     rtol=1e-5, atol=1e-6)]
    assert not different, f"{len(different)} variables differ, e.g. {different[:3]}"
    # And training did move them: the EMA lags the weights it follows.
    moved = [k for k in first if k.startswith("ema/")
             and not np.allclose(first[k], first["model/" + k[4:]])]
    assert moved


def test_only_the_chief_writes_checkpoints(two_worker_run):
    root, _, _ = two_worker_run
    chief = root / "model-0"
    assert (chief / "checkpoint").exists() and (chief / "config.yaml").exists()
    other = root / "model-1"
    assert not other.exists() or not any(other.glob("ckpt-*"))
