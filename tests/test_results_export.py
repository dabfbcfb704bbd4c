"""`compare --export` copies a comparison's evidence into a results folder;
`compare --redraw` draws its table and figure again from such a folder
without training; `validation_freq` validates every N epochs and the last."""

import csv
import json
import math
import os
import shutil

import pytest

from keras_lrphase.cli import main
from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.results_export import commit
from keras_lrphase.training.results_export import export_results
from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.run_config import validation_epochs

pytestmark = pytest.mark.backend_neutral


def _main(*argv):
    try:
        return main(list(argv))
    except SystemExit as exit:
        return exit.code


def _compare(out, *extra):
    return _main("compare", "--preset", "demo", "--epochs", "3", "--seeds",
                 "1", "--pipeline", "numpy", "--verbose", "0", "--out", out,
                 *extra)


@pytest.mark.parametrize("argv, message", [
    (("--validation-freq", "0"), "Argument --validation-freq must be an integer >= 1. Received: --validation-freq=0"),
    (("--hessian-every", "-1"), "Received: --hessian-every=-1"),
])
def test_bad_cadences_are_refused_before_any_run(tmp_path, capsys, argv,
                                                 message):
    assert _compare(str(tmp_path / "out"), *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validation_freq_must_be_a_positive_integer():
    for value in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="Argument `validation_freq` must "
                           "be an integer >= 1. Received: validation_freq="):
            RunConfig(validation_freq=value).validate(check_data=False)
    assert validation_epochs(RunConfig(epochs=10, validation_freq=4)) == [4, 8, 10]
    assert validation_epochs(RunConfig(epochs=8, validation_freq=4)) == [4, 8]
    assert validation_epochs(RunConfig(epochs=3, validation_freq=5)) == [3]
    # A summary.json written before the field existed names the same run.
    saved = RunConfig(epochs=3).to_dict()
    assert "validation_freq" not in saved
    assert not RunConfig(epochs=3, validation_freq=2).matches(saved)


def test_export_into_its_own_folder_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert _compare(out, "--export", out) == 2
    assert f"Received: export={out!r}" in capsys.readouterr().err


def test_redraw_needs_no_data_folder_and_says_what_is_missing(tmp_path, capsys):
    # cifar10-table2 reads an image folder when it trains; redrawing reads
    # only the runs' files, so no --data-dir is asked for.
    assert _main("compare", "--preset", "cifar10-table2", "--redraw",
                 "--out", str(tmp_path)) == 2
    captured = capsys.readouterr()
    assert "[1/7] small-batch: not in" in captured.out
    assert "[7/7] two-phase (defaults): not in" in captured.out
    assert ("--redraw: no finished run of preset 'cifar10-table2' in "
            f"{tmp_path}") in captured.err


def _write_run(folder, epochs, summary):
    """A run folder: `epochs` rows of 1 s training, 0.5 s validation,
    0.25 s eigenvalue, 0 s between epochs in an epoch of 2 s."""
    os.makedirs(folder)
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for epoch in range(1, epochs + 1):
            row = dict.fromkeys(COLUMNS, 0.5)
            row.update(epoch=epoch, phase="n/a", train_time=1.0,
                       epoch_time=2.0, hessian_time=0.25, between_time=0.0)
            writer.writerow([row[c] for c in COLUMNS])
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)


def test_export_copies_the_evidence_and_names_where_it_came_from(tmp_path):
    out, dest = tmp_path / "out", tmp_path / "results"
    summary = dict(config=dict(epochs=2, precision="bf16", batch_size=128),
                   steps_per_epoch=10, backend="jax",
                   epochs_completed=2, best_val_accuracy=0.5,
                   final_val_accuracy=0.25, train_wall_time_s=90.0)
    _write_run(str(out / "small-batch"), 2, summary)
    _write_run(str(out / "LARS"), 1, dict(summary, epochs_completed=1))
    (out / "LARS" / "backup").mkdir()  # checkpoints stay behind
    (out / "LARS" / "backup" / "checkpoint.weights.h5").write_text("x")
    (out / "table.md").write_text("# table\n")
    (out / "gpu.csv").write_text("2026/11/27 10:00:00.000, 0, 40, 1000\n"
                                 "2026/11/27 10:01:00.000, 0, 60, 2000\n")
    written = export_results(str(out), str(dest), "keras-lrphase compare x")
    assert written == [
        "LARS/history.csv", "LARS/summary.json", "small-batch/history.csv",
        "small-batch/summary.json", "table.md", "gpu.csv", "progress.md",
        "README.md"]
    assert not (dest / "LARS" / "backup").exists()
    for name in ("LARS/history.csv", "small-batch/summary.json", "table.md"):
        assert (dest / name).read_bytes() == (out / name).read_bytes()
    progress = (dest / "progress.md").read_text()
    assert "| small-batch | 2/2 (done) |" in progress
    assert "1.00 + 0.50 + 0.25 + 0.00 + 0.25" in progress
    assert "Finished: LARS, small-batch (2 of 2 runs)." in progress
    assert ("GPU utilisation (nvidia-smi, 2 samples over 1.0 min): mean 50%"
            in progress)
    readme = (dest / "README.md").read_text().splitlines()
    assert "- Backend: jax" in readme and "- Precision: bf16" in readme
    assert f"- Commit: {commit()}" in readme
    assert "- Command: `keras-lrphase compare x`" in readme
    assert any(line.startswith("- Hardware: ") for line in readme)
    assert readme[-2:] == ["| LARS | 1/2 | 50.00% | 25.00% | 1.5 |",
                           "| small-batch | 2/2 | 50.00% | 25.00% | 1.5 |"]
    # A second export (another machine's rows) adds to the folder.
    other = tmp_path / "other"
    _write_run(str(other / "two-phase"), 2, summary)
    export_results(str(other), str(dest), "keras-lrphase compare y")
    assert (dest / "LARS" / "summary.json").exists()
    assert (dest / "two-phase" / "summary.json").exists()


@pytest.mark.slow  # trains two demo runs of 3 epochs
def test_export_then_redraw_without_training(tmp_path, capsys):
    out, dest = str(tmp_path / "out"), tmp_path / "results"
    assert _compare(out, "--only", "small-batch,two-phase",
                    "--validation-freq", "2", "--export", str(dest)) == 0
    assert f"Exported 8 files to {dest}" in capsys.readouterr().out
    for run in ("small-batch", "two-phase"):
        rows = EpochRecorder.read(str(dest / run / "history.csv"))
        # Validated in epochs 2 and 3 (every 2nd and the last) only.
        assert [math.isnan(r["val_accuracy"]) for r in rows] == [
            True, False, False]
        assert [math.isnan(r["validation_time"]) for r in rows] == [
            True, False, False]
        summary = json.loads((dest / run / "summary.json").read_text())
        assert summary["config"]["validation_freq"] == 2
        assert summary["final_val_accuracy"] == rows[2]["val_accuracy"]
        assert summary["best_val_accuracy"] == max(
            rows[1]["val_accuracy"], rows[2]["val_accuracy"])
        # The eigenvalue's seconds in the epochs it ran (every epoch).
        assert all(r["hessian_time"] > 0 for r in rows)
    readme = (dest / "README.md").read_text()
    assert ("- Command: `keras-lrphase compare --preset demo --epochs 3 "
            "--seeds 1 --pipeline numpy --verbose 0 --out " in readme)
    table = (dest / "table.md").read_text()
    histories = {run: (dest / run / "history.csv").read_bytes()
                 for run in ("small-batch", "two-phase")}
    (dest / "table.md").unlink()
    (dest / "compare.png").unlink()
    shutil.rmtree(out)  # the machine that trained them is gone

    assert _compare(str(dest), "--redraw", "--validation-freq", "2") == 0
    printed = capsys.readouterr().out
    assert printed.count("done before") == 2
    assert f"[2/3] large-batch: not in {dest}" in printed
    assert (dest / "compare.png").exists()
    redrawn = (dest / "table.md").read_text()
    # The same rows (the total time counts the runs' own minutes).
    assert ([line for line in redrawn.splitlines() if line.startswith("| ")]
            == [line for line in table.splitlines() if line.startswith("| ")])
    for run, content in histories.items():
        assert (dest / run / "history.csv").read_bytes() == content
