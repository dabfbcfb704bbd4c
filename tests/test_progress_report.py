import csv
import math

import pytest

from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.progress_report import finished_lines
from keras_lrphase.training.progress_report import progress_table
from keras_lrphase.training.progress_report import report
from keras_lrphase.training.progress_report import run_status

pytestmark = pytest.mark.backend_neutral


def _write_history(path, times, columns=COLUMNS):
    """Rows of `(train, validation, total[, hessian, between])` seconds
    (None: an empty cell); the other columns hold 0.5."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for epoch, parts in enumerate(times, 1):
            train, validation, total, hessian, between = (
                tuple(parts) + (None, None))[:5]
            row = dict.fromkeys(columns, 0.5)
            row.update(epoch=epoch, phase="n/a", train_time=train,
                       validation_time=validation, epoch_time=total,
                       hessian_time=hessian, between_time=between)
            writer.writerow(["" if row[c] is None else row[c] for c in columns])


def test_the_epoch_is_split_into_training_validation_and_the_rest(tmp_path):
    run = tmp_path / "large-batch"
    run.mkdir()
    # The first epoch (compilation) is left out of the medians.
    _write_history(run / "history.csv", [(30.0, 9.0, 50.0), (2.0, 0.5, 3.0),
                                         (3.0, 0.5, 4.0), (4.0, 0.7, 5.5)])
    status = run_status(str(run))
    split = status["seconds_per_epoch"]
    assert (split["training"], split["validation"], split["rest"]) == (
        3.0, 0.5, 0.5)
    assert math.isnan(split["eigenvalue"]) and math.isnan(split["between"])
    assert status["epoch_minutes"] == 4.0 / 60
    row = progress_table(str(tmp_path)).splitlines()[2]
    assert row.split(" | ")[7] == "3.00 + 0.50 + - + - + 0.50"


def test_a_history_without_validation_times_splits_in_two(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    old = [c for c in COLUMNS if c != "validation_time"]
    _write_history(run / "history.csv", [(3.0, None, 4.0), (2.0, None, 2.5)],
                   columns=old)
    status = run_status(str(run))
    assert status["seconds_per_epoch"]["training"] == 2.0
    assert math.isnan(status["seconds_per_epoch"]["validation"])
    assert status["seconds_per_epoch"]["rest"] == 0.5
    assert progress_table(str(tmp_path)).splitlines()[2].split(" | ")[7] == (
        "2.00 + - + - + - + 0.50")


def test_each_part_counts_for_the_share_of_epochs_it_ran_in(tmp_path):
    run = tmp_path / "LARS"
    run.mkdir()
    # Validation in epochs 2, 4 and 6 (the first compiles: 5 s), the
    # eigenvalue in epochs 3 and 6 (the first compiles: 4 s), a checkpoint
    # of 0.6 s between epochs every third epoch (0.0 otherwise).
    _write_history(run / "history.csv", [
        (20.0, None, 21.0, None, None),
        (1.0, 5.0, 6.5, None, 0.0),
        (1.2, None, 5.7, 4.0, 0.0),
        (1.0, 0.4, 1.9, None, 0.6),
        (1.1, None, 1.6, None, 0.0),
        (1.0, 0.6, 2.5, 0.4, 0.0),
        (0.9, None, 1.4, None, 0.6)])
    split = run_status(str(run))["seconds_per_epoch"]
    assert split["training"] == 1.0
    # median(0.4, 0.6) = 0.5 in 3 of 7 epochs; 0.4 in 2 of 7 epochs.
    assert math.isclose(split["validation"], 0.5 * 3 / 7)
    assert math.isclose(split["eigenvalue"], 0.4 * 2 / 7)
    assert math.isclose(split["between"], 1.2 / 6)
    # epoch - train - validation - eigenvalue of epochs 2-7:
    # 0.5, 0.5, 0.5, 0.5, 0.5, 0.5
    assert math.isclose(split["rest"], 0.5)
    status = run_status(str(run))
    assert math.isclose(status["epoch_minutes"] * 60, sum(split.values()))


def test_the_report_says_which_runs_finished(tmp_path):
    for name, epochs in (("small-batch", 3), ("two-phase", 2)):
        (tmp_path / name).mkdir()
        _write_history(tmp_path / name / "history.csv",
                       [(1.0, 0.5, 2.0)] * epochs)
    (tmp_path / "small-batch" / "summary.json").write_text(
        '{"config": {"epochs": 3, "batch_size": 128}, "steps_per_epoch": 10}')
    (tmp_path / "two-phase" / "backup").mkdir()
    (tmp_path / "two-phase" / "backup" / "run.json").write_text(
        '{"config": {"epochs": 300}, "images_per_epoch": 49152}')
    assert finished_lines(str(tmp_path)) == [
        "Finished: small-batch (1 of 2 runs).",
        "Not finished: two-phase (2/300)."]
    gpu = tmp_path / "gpu.csv"
    gpu.write_text("2026/11/27 10:00:00.000, 0, 40, 1000\n"
                   "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
                   "2026/11/27 10:01:30.000, 0, 80, 5000\n"
                   "2026/11/27 10:03:00.000, 0, 9")  # cut by the kill
    text = report(str(tmp_path), gpu=str(gpu))
    assert text.splitlines()[2].startswith("| small-batch | 3/3 (done) |")
    assert text.endswith(
        "Finished: small-batch (1 of 2 runs).\n"
        "Not finished: two-phase (2/300).\n\n"
        "GPU utilisation (nvidia-smi, 2 samples over 1.5 min): mean 60%, "
        "median 60%, under 50% in 50% of the samples; memory used up to "
        "5,000 MiB.")
    # No nvidia-smi on the machine: no log, or an empty one.
    assert report(str(tmp_path), gpu=str(tmp_path / "absent.csv")).endswith(
        "\n\nGPU utilisation: n/a (no nvidia-smi samples in absent.csv).")
    (tmp_path / "empty.csv").write_text("")
    assert report(str(tmp_path), gpu=str(tmp_path / "empty.csv")).endswith(
        "\n\nGPU utilisation: n/a (no nvidia-smi samples in empty.csv).")
    assert "GPU" not in report(str(tmp_path))
