import csv
import math

import pytest

from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.progress_report import progress_table
from keras_lrphase.training.progress_report import run_status

pytestmark = pytest.mark.backend_neutral


def _write_history(path, times, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for epoch, (train, validation, total) in enumerate(times, 1):
            row = dict.fromkeys(columns, 0.5)
            row.update(epoch=epoch, phase="n/a", train_time=train,
                       validation_time=validation, epoch_time=total)
            writer.writerow([row[c] for c in columns])


def test_the_epoch_is_split_into_training_validation_and_the_rest(tmp_path):
    run = tmp_path / "large-batch"
    run.mkdir()
    # The first epoch (compilation) is left out of the medians.
    _write_history(run / "history.csv", [(30.0, 9.0, 50.0), (2.0, 0.5, 3.0),
                                         (3.0, 0.5, 4.0), (4.0, 0.7, 5.5)])
    status = run_status(str(run))
    assert status["seconds_per_epoch"] == {
        "training": 3.0, "validation": 0.5, "rest": 0.5}
    assert status["epoch_minutes"] == 4.0 / 60
    row = progress_table(str(tmp_path)).splitlines()[2]
    assert row.split(" | ")[7] == "3.00 + 0.50 + 0.50"


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
        "2.00 + - + 0.50")
