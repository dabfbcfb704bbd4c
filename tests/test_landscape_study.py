"""The landscape-cpu preset: curves, segments and margins after `compare`."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_lrphase import presets
from keras_lrphase.cli import main
from keras_lrphase.presets import get_preset

pytestmark = pytest.mark.backend_neutral

PNG = b"\x89PNG\r\n\x1a\n"


def test_landscape_preset_has_a_run_for_each_figure():
    preset = get_preset("landscape-cpu")
    assert preset.requires_data_dir and preset.reference == "reference"
    table = {run.label: c.resolved() for run, c in preset.configs(data_dir="/d")}
    assert list(table) == ["reference", "large-batch", "lars", "sgdr",
                           "two-phase-small", "two-phase-large"]
    for config in table.values():
        config.validate(check_data=False)
        assert (config.dataset, config.model, config.epochs,
                config.train_size) == ("cifar10", "small-cnn", 30, 5000)
    # Figure 1: the reference and its variants save their models.
    assert [label for label, c in table.items() if c.save_model] == [
        "reference", "large-batch", "lars", "sgdr"]
    assert table["large-batch"].batch_size == 1024
    assert table["lars"].lars is not None
    assert table["sgdr"].schedule == "cosine-restarts"
    # Figure 2: snapshots at the end of every SGDR cycle, and the same
    # epochs of the step-decay reference.
    sgdr = table["sgdr"]
    assert sgdr.snapshot_epochs == table["reference"].snapshot_epochs
    assert all(e % sgdr.restart_epochs == 0 for e in sgdr.snapshot_epochs)
    # Figure 3: two-phase at a small and a large batch, every epoch saved.
    for label, batch in (("two-phase-small", 128), ("two-phase-large", 1024)):
        assert table[label].schedule == "two-phase"
        assert table[label].batch_size == batch
        assert table[label].snapshot_epochs == tuple(range(1, 31))
    # A shortened budget scales every epoch count.
    for _, config in preset.configs(epochs=3, data_dir="/d"):
        config.resolved().validate(check_data=False)


def test_events_are_restarts_and_decays():
    from keras_lrphase.training.landscape_study import events
    from keras_lrphase.training.run_config import RunConfig

    assert events(RunConfig(schedule="cosine-restarts", epochs=30,
                            restart_epochs=5, restart_mult=1.0)) == (
        [5, 10, 15, 20, 25], "restart")
    assert events(RunConfig(schedule="cosine-restarts", epochs=30,
                            restart_epochs=3, restart_mult=2.0)) == (
        [3, 9, 21], "restart")
    assert events(RunConfig(decay_epochs=(15, 25), epochs=30)) == (
        [15, 25], "decay")


def _tiny(monkeypatch):
    name = "landscape-cpu"
    preset = get_preset(name)
    tiny = dataclasses.replace(
        preset, requires_data_dir=False,
        common=dict(preset.common, dataset="digits", train_size=None,
                    test_size=None))
    monkeypatch.setitem(presets.PRESETS, name, tiny)
    return tiny


# About 35 s on 2 CPU cores; checked on the TensorFlow backend only.
@pytest.mark.slow  # the main job of .ci/run runs it
@pytest.mark.tensorflow_backend
def test_compare_writes_the_three_figures_with_the_library_numbers(
        tmp_path, monkeypatch):
    from keras_lrphase.analysis.analyze_actions import classifier_loss
    from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm
    from keras_lrphase.analysis.margins import normalized_margins
    from keras_lrphase.analysis.margins import quartile_statistics
    from keras_lrphase.analysis.mode_connectivity import linear_path
    from keras_lrphase.data import channel_stats
    from keras_lrphase.data import load_dataset
    from keras_lrphase.data import normalize_array
    from keras_lrphase.training import landscape_study
    from keras_lrphase.training.heuristics_study import snapshot_model

    monkeypatch.setattr(landscape_study, "CURVE_EPOCHS", 1)
    monkeypatch.setattr(landscape_study, "CURVE_POINTS", 3)
    monkeypatch.setattr(landscape_study, "SEGMENT_POINTS", 3)
    preset = _tiny(monkeypatch)
    # Four of the six runs: one of each kind.
    assert main(["compare", "--preset", "landscape-cpu", "--epochs", "3",
                 "--pipeline", "numpy", "--verbose", "0", "--only",
                 "reference,large-batch,sgdr,two-phase-large",
                 "--out", str(tmp_path)]) == 0
    for png in ("curves.png", "segments.png", "margins.png"):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == PNG, png
    assert not (tmp_path / "similarity.json").exists()
    with open(tmp_path / "landscape.json") as f:
        record = json.load(f)
    with open(tmp_path / "landscape.md") as f:
        markdown = f.read()
    assert "## Curves from the reference" in markdown
    assert "## Segments between snapshots (Figure 2)" in markdown

    data = load_dataset("digits")
    mean, std = channel_stats(data.x_train)
    train = (normalize_array(data.x_train, mean, std),
             np.asarray(data.y_train, "int32"))
    test = (normalize_array(data.x_test, mean, std),
            np.asarray(data.y_test, "int32"))  # 1,438 / 359: all < 2,000

    # Figure 1: the segment's end points are the end models, recalibrated.
    assert set(record["curves"]) == {"large-batch", "sgdr"}
    found = record["curves"]["large-batch"]
    ends = [keras.saving.load_model(str(tmp_path / label / "model.keras"),
                                    compile=False)
            for label in ("reference", "large-batch")]
    for end, t in zip(ends, (0, -1)):
        recalibrate_batch_norm(end, train, batch_size=128)
        end.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
        loss = end.evaluate(*train, batch_size=128, verbose=0)[0]
        accuracy = end.evaluate(*test, batch_size=128, verbose=0)[1]
        for path in ("segment", "bezier"):
            np.testing.assert_allclose(found[path]["train_loss"][t], loss,
                                       rtol=1e-5)
            np.testing.assert_allclose(found[path]["test_accuracy"][t],
                                       accuracy, rtol=1e-6)
    # The middle of the segment, as ConnectingCurve.evaluate gives it.
    models = [keras.saving.load_model(str(tmp_path / label / "model.keras"),
                                      compile=False)
              for label in ("reference", "large-batch")]
    segment = linear_path(*models, loss=classifier_loss(models[0]))
    direct = segment.evaluate([0.5], test, recalibrate_data=train,
                              batch_size=128)
    np.testing.assert_allclose(found["segment"]["test_loss"][1],
                               direct["loss"][0], rtol=1e-5)
    for path in found.values():
        if isinstance(path, dict):
            loss = np.array(path["train_loss"])
            assert path["barrier"] == pytest.approx(
                loss.max() - max(loss[0], loss[-1]))

    # Figure 2: snapshots of sgdr and of the step reference.
    assert set(record["segments"]) == {"reference", "sgdr"}
    sgdr = record["segments"]["sgdr"]
    # Consecutive pairs, then each earlier snapshot to the last.
    assert [p["epochs"] for p in sgdr["pairs"]] == [[1, 2], [2, 3], [1, 3]]
    assert sgdr["event"] == "restart" and sgdr["events"] == [1, 2]
    assert [p["crosses"] for p in sgdr["pairs"]] == [[1], [2], [1, 2]]
    config = {run.label: c for run, c in preset.configs(epochs=3)}
    first = snapshot_model(config["sgdr"], data, str(
        tmp_path / "sgdr" / "snapshots" / "epoch2.weights.h5"))
    recalibrate_batch_norm(first, train, batch_size=128)
    first.compile(loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    np.testing.assert_allclose(
        sgdr["pairs"][1]["train_loss"][0],
        first.evaluate(*train, batch_size=128, verbose=0), rtol=1e-5)
    for pair in sgdr["pairs"] + record["segments"]["reference"]["pairs"]:
        loss = np.array(pair["train_loss"])
        assert pair["barrier"] == pytest.approx(
            loss.max() - max(loss[0], loss[-1]))
        assert pair["barrier"] >= 0

    # Figure 3: a margin number is normalized_margins + quartile_statistics
    # of that epoch's snapshot on the fixed sample of training images.
    assert set(record["margins"]) == {"two-phase-large"}
    large = record["margins"]["two-phase-large"]
    assert large["epochs"] == [1, 2, 3] and large["batch_size"] == 1024
    with open(tmp_path / "two-phase-large" / "summary.json") as f:
        summary = json.load(f)
    assert large["plateau_epoch"] == summary["plateau_epoch"]
    chosen = np.sort(np.random.default_rng(0).choice(len(train[1]), 1000,
                                                     replace=False))
    model = snapshot_model(config["two-phase-large"], data, str(
        tmp_path / "two-phase-large" / "snapshots" / "epoch2.weights.h5"))
    statistics = quartile_statistics(normalized_margins(
        model, train[0][chosen], train[1][chosen]))
    for key, value in statistics.items():
        np.testing.assert_allclose(large[key][1], value, rtol=1e-5)
    with open(tmp_path / "two-phase-large" / "history.csv") as f:
        rows = f.read().splitlines()
    assert large["train_loss"][1] == pytest.approx(
        float(rows[2].split(",")[1]))
