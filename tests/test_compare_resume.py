"""Runs resume from their folder; `compare --jobs` gives what one process gives."""

import json
import os
import re

import keras
import numpy as np
import pytest

from keras_lrphase.cli import main
from keras_lrphase.training import runner
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.run_config import RunConfig

# Five epochs of digits fall short of the loss plateau: TwoPhaseLR notes at
# epoch 3 that none was found yet. Resumption, not the schedule, is under
# test here.
pytestmark = [
    pytest.mark.backend_neutral,
    pytest.mark.filterwarnings(
        "ignore:TwoPhaseLR. half of the 5 epochs have run \\(epoch 3\\) and "
        "no loss plateau:UserWarning"),
]

KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
        "phase", "hessian_max_eigenvalue")


def _config(**overrides):
    values = dict(dataset="digits", epochs=5, batch_size=128, train_size=512,
                  test_size=200, schedule="two-phase", warmup_epochs=1,
                  plateau_patience=1, lr=0.2, pipeline="numpy",
                  augment="crop")
    values.update(overrides)
    return RunConfig(**values)


def _rows(folder):
    return [{k: r[k] for k in KEYS}
            for r in EpochRecorder.read(os.path.join(folder, "history.csv"))]


class _Crash(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("crash_after", [0, 2])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch,
                                                           crash_after):
    config = _config()
    whole = runner.run_training(config, str(tmp_path / "whole"), verbose=0,
                                log=None, resume=True)
    assert not os.path.exists(tmp_path / "whole" / "backup")

    build = runner.build_callbacks

    def crashing(*args, **kwargs):
        callbacks, controller = build(*args, **kwargs)
        return callbacks + [_Crash(crash_after)], controller

    monkeypatch.setattr(runner, "build_callbacks", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(config, str(tmp_path / "cut"), verbose=0, log=None,
                            resume=True)
    monkeypatch.setattr(runner, "build_callbacks", build)
    # The crash comes before the epoch's row and checkpoint are written.
    assert len(_rows(str(tmp_path / "cut"))) == crash_after
    resumed = runner.run_training(config, str(tmp_path / "cut"), verbose=0,
                                  log=None, resume=True)
    assert _rows(str(tmp_path / "cut")) == _rows(str(tmp_path / "whole"))
    for key in ("final_val_accuracy", "final_loss", "decay_epochs",
                "plateau_epoch", "epochs_completed"):
        assert resumed[key] == whole[key]


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, monkeypatch):
    build = runner.build_callbacks
    monkeypatch.setattr(runner, "build_callbacks", lambda *a, **k: (
        build(*a, **k)[0] + [_Crash(1)], build(*a, **k)[1]))
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(_config(lr=0.3), str(tmp_path / "run"), verbose=0,
                            log=None, resume=True)
    monkeypatch.setattr(runner, "build_callbacks", build)
    runner.run_training(_config(), str(tmp_path / "run"), verbose=0, log=None,
                        resume=True)
    runner.run_training(_config(), str(tmp_path / "fresh"), verbose=0, log=None)
    assert _rows(str(tmp_path / "run")) == _rows(str(tmp_path / "fresh"))


def _compare(out, *extra):
    try:
        return main(["compare", "--preset", "demo", "--epochs", "3", "--seeds",
                     "1", "--pipeline", "numpy", "--verbose", "0", "--out",
                     out, *extra])
    except SystemExit as exit:
        return exit.code


@pytest.mark.slow  # the main job of .ci/run runs it
def test_compare_jobs_give_the_sequential_result_and_finished_runs_are_kept(
        tmp_path, capsys):
    runs = ("large-batch", "two-phase")
    only = ("--only", ",".join(runs))
    assert _compare(str(tmp_path / "one"), *only) == 0
    assert _compare(str(tmp_path / "two"), "--jobs", "2", *only) == 0
    for run in runs:
        assert (_rows(str(tmp_path / "one" / run))
                == _rows(str(tmp_path / "two" / run)))
    capsys.readouterr()
    # Called again, nothing is trained again: the table is rewritten.
    summary = tmp_path / "two" / "two-phase" / "summary.json"
    before = summary.read_text()
    assert _compare(str(tmp_path / "two"), "--jobs", "2", *only) == 0
    out = capsys.readouterr().out
    assert out.count("done before") == 2
    assert summary.read_text() == before
    # The rewritten table still reports the runs' time, not this call's.
    trained = sum(json.loads((tmp_path / "two" / run / "summary.json")
                             .read_text())["wall_time_s"] for run in runs)
    table = (tmp_path / "two" / "table.md").read_text()
    total = float(re.search(r"total time ([0-9.]+) min", table).group(1))
    assert total >= round(trained / 60, 1) > 0
    # Another budget is another configuration: trained again.
    assert _compare(str(tmp_path / "two"), "--epochs", "2", "--only",
                    "two-phase") == 0
    assert json.loads(summary.read_text())["epochs_completed"] == 2


NEWER_FIELDS = ("teacher", "distill_alpha", "temperature", "image_size")


def test_runs_written_before_newer_fields_existed_are_kept(tmp_path, capsys):
    # A preset run finished by an earlier version of the package (its
    # summary.json lacks the fields added since) is not trained again after
    # an upgrade, and an interrupted one resumes from its checkpoint.
    only = ("--only", "two-phase")
    assert _compare(str(tmp_path), *only) == 0
    summary = tmp_path / "two-phase" / "summary.json"
    older = json.loads(summary.read_text())
    for name in NEWER_FIELDS:
        del older["config"][name]
    summary.write_text(json.dumps(older))
    before = summary.read_text()
    capsys.readouterr()
    assert _compare(str(tmp_path), *only) == 0
    assert "done before" in capsys.readouterr().out
    assert summary.read_text() == before


def test_a_finished_run_of_another_configuration_is_named_before_retraining(
        tmp_path, capsys):
    # Re-rendering a table with another pipeline (tf.data, where the runs
    # were made on the accelerator's device pipeline) trains the runs again:
    # the call says so, and why, before the first epoch.
    only = ("--only", "two-phase")
    assert _compare(str(tmp_path), *only) == 0
    summary = tmp_path / "two-phase" / "summary.json"
    elsewhere = json.loads(summary.read_text())
    elsewhere["config"]["pipeline"] = "tf.data"
    summary.write_text(json.dumps(elsewhere))
    capsys.readouterr()
    assert _compare(str(tmp_path), *only) == 0
    out = capsys.readouterr().out
    assert (f"[1/1] two-phase: {tmp_path / 'two-phase'} holds a run finished "
            "with another configuration (pipeline 'tf.data' there, 'numpy' "
            "now): trained again") in out
    assert "done before" not in out
    assert json.loads(summary.read_text())["config"]["pipeline"] == "numpy"


def test_a_checkpoint_written_before_newer_fields_existed_resumes(
        tmp_path, monkeypatch):
    build = runner.build_callbacks
    monkeypatch.setattr(runner, "build_callbacks", lambda *a, **k: (
        build(*a, **k)[0] + [_Crash(2)], build(*a, **k)[1]))
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(_config(), str(run), verbose=0, log=None,
                            resume=True)
    marker = run / runner.BACKUP_DIR / runner.RUN_FILE
    older = json.loads(marker.read_text())
    for name in NEWER_FIELDS:
        del older["config"][name]
    marker.write_text(json.dumps(older))
    resumed = []
    monkeypatch.setattr(runner, "build_callbacks", lambda *a, **k: (
        build(*a, **k)[0] + [_FirstEpoch(resumed)], build(*a, **k)[1]))
    runner.run_training(_config(), str(run), verbose=0, log=None, resume=True)
    # Epochs 0 and 1 are not trained again (the crash came at the end of
    # epoch 2, before its checkpoint).
    assert resumed == [2]
    monkeypatch.setattr(runner, "build_callbacks", build)
    runner.run_training(_config(), str(tmp_path / "fresh"), verbose=0, log=None)
    assert _rows(str(run)) == _rows(str(tmp_path / "fresh"))


class _FirstEpoch(keras.callbacks.Callback):
    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_epoch_begin(self, epoch, logs=None):
        if not self.record:
            self.record.append(epoch)


def test_compare_rejects_bad_jobs(tmp_path, capsys):
    assert _compare(str(tmp_path / "x"), "--jobs", "0") == 2
    assert "Argument --jobs must be >= 1. Received: --jobs=0" in capsys.readouterr().err


def test_an_interrupted_compare_says_how_to_continue(tmp_path, capsys, monkeypatch):
    from keras_lrphase.training import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_training", interrupted)
    assert _compare(str(tmp_path / "x")) == 130
    err = capsys.readouterr().err
    assert "interrupted; the runs keep their last completed epoch" in err
    assert "Traceback" not in err


def test_a_resumed_compare_says_so_and_its_times_add_up(tmp_path, monkeypatch,
                                                        capsys):
    """The continued run is named with the epoch it continues from, and
    `wall_time_s` (every epoch plus the last call's setup) is at least
    `train_wall_time_s` (every epoch)."""
    build = runner.build_callbacks

    def crashing(*args, **kwargs):
        callbacks, controller = build(*args, **kwargs)
        return callbacks + [_Crash(2)], controller

    out = str(tmp_path / "x")
    monkeypatch.setattr(runner, "build_callbacks", crashing)
    assert _compare(out, "--only", "two-phase") == 130
    monkeypatch.setattr(runner, "build_callbacks", build)
    capsys.readouterr()
    assert _compare(out, "--only", "two-phase") == 0
    printed = capsys.readouterr().out.splitlines()
    assert [l for l in printed if "continuing" in l] == [
        f"[1/1] continuing two-phase from epoch 3 of 3 (2 trained before, "
        f"checkpoint in {out}/two-phase/backup)"]
    summary = json.loads((tmp_path / "x" / "two-phase" / "summary.json").read_text())
    rows = EpochRecorder.read(str(tmp_path / "x" / "two-phase" / "history.csv"))
    assert summary["train_wall_time_s"] >= round(sum(r["epoch_time"] for r in rows), 2) - 0.02
    assert summary["wall_time_s"] >= summary["train_wall_time_s"]
