"""`keras-lrphase train --distributed` and the distributed guide's example.

The fast tests check the workers' arithmetic and the errors. The slow ones
run real jobs: the example under `MirroredStrategy` (the main job of
`.ci/run`) and with two JAX processes, and the CLI with two JAX processes
(the JAX job of `.ci/run` runs these two without TensorFlow installed). The Horovod runs of both are
in `tests/test_horovod.py` (the Horovod job of `.ci/run`).
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from worker_processes import free_ports
from worker_processes import run_together

from keras_lrphase.cli import main
from keras_lrphase.training.workers import Workers
from keras_lrphase.training.workers import start_workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "distributed_two_phase.py")


# -- the workers' arithmetic and errors ----------------------------------------
@pytest.mark.backend_neutral
def test_each_worker_gets_an_equal_strided_shard():
    x = np.arange(11)
    shards = [Workers("jax", rank, 3).shard(x) for rank in range(3)]
    assert [s.tolist() for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert Workers().shard(x).tolist() == x.tolist()


@pytest.mark.backend_neutral
def test_the_global_batch_is_split_among_the_workers():
    assert Workers("horovod", 1, 4).local_batch(256, "batch_size") == 64
    with pytest.raises(ValueError, match=r"multiple of the number of workers "
                       r"\(4\). Received: batch_size=250"):
        Workers("horovod", 1, 4).local_batch(250, "batch_size")
    assert Workers().seed(3) == 3 and Workers("jax", 2, 4).seed(3) == 3 + 2 * 7919
    assert Workers("jax", 0, 2).is_chief and not Workers("jax", 1, 2).is_chief


@pytest.mark.backend_neutral
def test_start_workers_checks_its_arguments():
    assert start_workers() == Workers("local", 0, 1)
    with pytest.raises(ValueError, match=r"`distributed` must be one of horovod, "
                       r"jax. Received: distributed='mpi'"):
        start_workers("mpi")
    with pytest.raises(ValueError, match=r"`coordinator` is for distributed='jax' "
                       r"only. Received: coordinator='h:1'"):
        start_workers(None, coordinator="h:1")
    other = "jax" if keras.backend.backend() != "jax" else "horovod"
    with pytest.raises(RuntimeError, match="KERAS_BACKEND="):
        start_workers(other)


def test_jax_arguments_are_checked_before_joining():
    from keras_lrphase.training.workers import _start_jax

    with pytest.raises(ValueError, match=r"`process_id` is required with "
                       r"distributed='jax'. Received: process_id=None"):
        _start_jax("localhost:1234", 2, None)
    with pytest.raises(ValueError, match=r"`coordinator` must be 'host:port'"):
        _start_jax("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"`process_id` must be in \[0, 1\] "
                       r"\(num_processes=2\). Received: process_id=2"):
        _start_jax("localhost:1234", 2, 2)


def test_what_does_not_shard_is_refused_before_training():
    from keras_lrphase.data import load_dataset
    from keras_lrphase.training.run_config import RunConfig
    from keras_lrphase.training.runner import check_workers

    data = load_dataset("digits")
    two = Workers("jax", 0, 2)
    config = RunConfig(batch_size=128, pipeline="numpy").resolved()
    assert check_workers(config, data, two) == 64
    with pytest.raises(ValueError, match=r"`batch_size` is the global batch and "
                       r"must be a multiple of the number of workers \(2\). "
                       r"Received: batch_size=127"):
        check_workers(RunConfig(batch_size=127, pipeline="numpy").resolved(),
                      data, two)
    with pytest.raises(ValueError, match=r"`accumulate` must divide the "
                       r"per-worker batch \(128 / 2 workers = 64\)"):
        check_workers(RunConfig(batch_size=128, accumulate=128,
                                pipeline="numpy").resolved(), data, two)
    with pytest.raises(ValueError, match=r"`pipeline` is not supported on "
                       r"several workers yet \(distributed='jax'"):
        check_workers(RunConfig(batch_size=128, pipeline="tf.data").resolved(),
                      data, two)
    with pytest.raises(ValueError, match=r"`teacher` is not supported"):
        check_workers(RunConfig(batch_size=128, pipeline="numpy",
                                teacher="t.keras").resolved(), data, two)


def test_the_cli_names_the_flag_of_a_misplaced_jax_argument(tmp_path, capsys):
    status = main(["train", "--coordinator", "localhost:1", "--out",
                   str(tmp_path / "run")])
    assert status == 2
    assert ("--coordinator is for --distributed='jax' only. Received: "
            "--coordinator='localhost:1'") in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- real jobs -----------------------------------------------------------------
def _two_jax_processes(command, tmp_path, timeout=480):
    """Runs `command + [--coordinator ... --process-id r]` as 2 processes."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="2")
    port = str(free_ports()[0])
    return run_together(
        [command + ["--coordinator", f"localhost:{port}", "--num-processes",
                    "2", "--process-id", str(rank)] for rank in (0, 1)],
        env, timeout=timeout, cwd=tmp_path)


def _check_example_ranks(out, engine, ranks, reducer):
    results = [json.loads((out / f"rank{r}.json").read_text())
               for r in range(ranks)]
    first = results[0]
    assert first["engine"] == engine and first["reducer"] == reducer
    for other in results[1:]:
        # Same training, same decisions, in the same epochs.
        assert other == first
    assert first["learning_rate"][0] < first["learning_rate"][1] < 8.0
    assert first["learning_rate"][2] == 8.0  # warmup over
    assert first["plateau_epoch"] is not None
    assert first["switch_epoch"] is not None
    phases = first["phase"]
    assert phases == [0.0] * (first["switch_epoch"] + 1) + [1.0] * (
        len(phases) - first["switch_epoch"] - 1)
    return first


@pytest.mark.slow
def test_the_example_under_mirrored_strategy(tmp_path):
    pytest.importorskip("tensorflow")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, EXAMPLE, "mirrored", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    _check_example_ranks(tmp_path, "mirrored", 1, "LocalReducer")


@pytest.mark.slow
@pytest.mark.jax
@pytest.mark.backend_neutral
def test_the_example_with_two_jax_processes(tmp_path):
    _two_jax_processes([sys.executable, EXAMPLE, "jax", str(tmp_path)],
                       tmp_path)
    result = _check_example_ranks(tmp_path, "jax", 2, "JaxProcessReducer")
    assert result["workers"] == 2


@pytest.mark.slow
@pytest.mark.jax
@pytest.mark.backend_neutral
def test_the_cli_with_two_jax_processes(tmp_path):
    out = tmp_path / "run"
    outputs = _two_jax_processes(
        [sys.executable, "-m", "keras_lrphase", "train", "--distributed", "jax",
         "--schedule", "two-phase", "--warmup-epochs", "1", "--lars", "0.01",
         "--lr", "2", "--epochs", "10", "--batch-size", "128",
         "--train-size", "1024", "--test-size", "256",
         "--hessian-batch-size", "512", "--plateau-patience", "1",
         "--min-delta", "0.2", "--verbose", "0", "--out", str(out)],
        tmp_path)
    assert "images/s across 2 workers" in outputs[0][0]
    # Rank 1 prints no result of its own (Gloo's connection line aside).
    assert "best val accuracy" not in outputs[1][0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == {"engine": "jax", "size": 2,
                                  "batch_per_worker": 64}
    assert summary["steps_per_epoch"] == 1024 // 128
    assert summary["images_per_second"] > 0
    assert summary["exploration_epochs"] is not None  # the switch happened
    # Rank 1 writes its history only, equal to rank 0's.
    assert sorted(os.listdir(out / "workers" / "rank1")) == ["history.csv"]
    rows = [list(csv.DictReader(pathlib.Path(path).read_text().splitlines())) for path in (
        out / "history.csv", out / "workers" / "rank1" / "history.csv")]
    for row0, row1 in zip(*rows):
        for column in ("loss", "learning_rate", "phase",
                       "hessian_max_eigenvalue", "val_accuracy"):
            assert row0[column] == row1[column], column
