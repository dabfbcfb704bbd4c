"""HessianSpectrumMonitor in `fit`: logs, records, plots, resume, errors."""

import csv
import json
import math
import os

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.spectrum_plot import plot_eigenvalue_trajectories
from keras_lrphase.analysis.spectrum_plot import plot_hessian_density
from keras_lrphase.callbacks.hessian_spectrum_monitor import HessianSpectrumMonitor
from keras_lrphase.callbacks.hessian_spectrum_monitor import spectrum_log_keys
from keras_lrphase.hessian import HessianOperator
from keras_lrphase.hessian.spectrum_records import load_spectrum_records

pytestmark = pytest.mark.backend_neutral

N, D, C = 48, 5, 3
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(N, D)).astype("float32"),
            rng.integers(0, C, size=N))


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(4, activation="tanh", name="hidden"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(C, name="head"),
    ])
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    return model


def _monitor(directory=None, **kwargs):
    options = dict(frequency=2, layers=["all", "head"], k=2, trace_probes=6,
                   density_steps=6, tolerance=1e-9, max_iterations=60)
    options.update(kwargs)
    return HessianSpectrumMonitor(_data(), directory, **options)


def test_logs_every_key_every_epoch_with_the_exact_eigenvalues(tmp_path):
    x, y = _data()
    model = _model()
    path = str(tmp_path / "history.csv")
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[
        _monitor(trace_probes=48), keras.callbacks.CSVLogger(path)])
    keys = spectrum_log_keys("all", 2) + spectrum_log_keys("head", 2)
    assert keys[:3] == ["hessian_eigenvalue_1", "hessian_eigenvalue_2",
                        "hessian_trace"]
    assert keys[4] == "head/hessian_eigenvalue_1"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for key in keys:
        column = [float(row[key]) for row in rows]
        assert [math.isnan(v) for v in column] == [True, False, True, False]
        assert history.history[key][3] == pytest.approx(column[3], rel=1e-6)
    # The last logged eigenvalues are those of the dense Hessian of the
    # trained model over the data (inference mode), layer by layer.
    for layer, prefix in (("all", ""), ("head", "head/")):
        dense = HessianOperator(model, (x, y), layer=layer).dense()
        exact = np.linalg.eigvalsh(dense)[::-1][:2]
        got = [history.history[f"{prefix}hessian_eigenvalue_{i}"][3]
               for i in (1, 2)]
        np.testing.assert_allclose(got, exact, rtol=1e-5)
        # Hutch++ with 48 products: a sketch of 16 vectors spans the head's
        # 15 weights (exact trace); for all 47 weights, within the error.
        trace = history.history[f"{prefix}hessian_trace"][3]
        error = history.history[f"{prefix}hessian_trace_error"][3]
        if layer == "head":
            assert error == 0.0
            assert trace == pytest.approx(np.trace(dense), rel=1e-5)
        else:
            assert 0 < abs(trace - np.trace(dense)) <= 3 * error


def test_records_load_and_plot(tmp_path):
    x, y = _data()
    folder = tmp_path / "spectrum"
    _model().fit(x, y, batch_size=16, epochs=4, verbose=0,
                 callbacks=[_monitor(str(folder))])
    assert sorted(os.listdir(folder)) == ["epoch_0002.json", "epoch_0004.json"]
    records = load_spectrum_records(str(folder))
    assert [r["epoch"] for r in records] == [2, 4]
    entry = records[1]["layers"]["all"]
    assert entry["size"] == 4 * D + 4 + 8 + 4 * C + C
    assert entry["samples"] == N and entry["converged"] is True
    density = entry["density"]
    assert np.trapezoid(density["density"], density["grid"]) == pytest.approx(
        1.0, abs=1e-3)
    assert len(density["nodes"]) == 1 and len(density["nodes"][0]) == 6
    figure = plot_eigenvalue_trajectories(str(folder),
                                          path=str(tmp_path / "t.png"),
                                          events={"decay": 3})
    assert [a.get_title() for a in figure.axes] == ["all", "head"]
    plot_hessian_density({"epoch 4": density}, path=str(tmp_path / "d.png"),
                         eigenvalues={"epoch 4": entry["eigenvalues"]})
    for name in ("t.png", "d.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_recorded_density_is_the_dense_spectrum_once_lanczos_spans_it(tmp_path):
    # The head has 15 weights: 15 Lanczos steps from any probe reach every
    # eigenvector, so each probe's quadrature nodes are the dense
    # eigenvalues (its weights, the probe's squared components along the
    # eigenvectors, sum to one). The record is of the last epoch: the
    # model's final weights.
    x, y = _data()
    model = _model()
    folder = tmp_path / "spectrum"
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        _monitor(str(folder), layers=["head"], k=15, trace_probes=0,
                 density_steps=15, density_probes=3)])
    dense = HessianOperator(model, (x, y), layer="head").dense()
    exact = np.linalg.eigvalsh(dense)
    entry = load_spectrum_records(str(folder))[0]["layers"]["head"]
    np.testing.assert_allclose(sorted(entry["eigenvalues"]), exact, rtol=1e-5,
                               atol=1e-6 * exact.max())
    density = entry["density"]
    assert density["products"] == 45 and len(density["nodes"]) == 3
    for nodes, weights in zip(density["nodes"], density["weights"]):
        np.testing.assert_allclose(sorted(nodes), exact, rtol=1e-4,
                                   atol=1e-5 * exact.max())
        assert sum(weights) == pytest.approx(1.0, rel=1e-6)
    grid, values = np.array(density["grid"]), np.array(density["density"])
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-3)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("killed")


def test_a_run_interrupted_after_a_record_resumes_to_the_same_records(tmp_path):
    x, y = _data()
    whole = tmp_path / "whole"
    _model().fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=False,
                 callbacks=[_monitor(str(whole), frequency=1, layers=["all"],
                                     density_steps=0)])
    resumed, backup = tmp_path / "resumed", str(tmp_path / "backup")
    # Killed at the end of epoch 3: its record is written, its checkpoint
    # is not (BackupAndRestore comes after the monitor).
    with pytest.raises(RuntimeError, match="killed"):
        _model().fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=False,
                     callbacks=[_monitor(str(resumed), frequency=1,
                                         layers=["all"], density_steps=0),
                                _Interrupt(),
                                keras.callbacks.BackupAndRestore(backup)])
    assert os.path.exists(resumed / "epoch_0003.json")
    history = _model(seed=5).fit(
        x, y, batch_size=16, epochs=6, verbose=0, shuffle=False,
        callbacks=[_monitor(str(resumed), frequency=1, layers=["all"],
                            density_steps=0),
                   keras.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 4  # epochs 3 to 6
    expected = load_spectrum_records(str(whole))
    got = load_spectrum_records(str(resumed))
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a["layers"]["all"]["eigenvalues"],
                                   b["layers"]["all"]["eigenvalues"], rtol=1e-5)
        assert a["layers"]["all"]["trace"]["value"] == pytest.approx(
            b["layers"]["all"]["trace"]["value"], rel=1e-5)


def test_a_new_run_replaces_old_records_with_a_warning(tmp_path):
    x, y = _data()
    folder = tmp_path / "spectrum"
    folder.mkdir()
    (folder / "epoch_0008.json").write_text(json.dumps({"epoch": 8}))
    with pytest.warns(UserWarning, match="the 1 records in directory="):
        _model().fit(x, y, epochs=2, verbose=0,
                     callbacks=[_monitor(str(folder), k=1, trace_probes=0,
                                         density_steps=0, layers="all")])
    assert sorted(os.listdir(folder)) == ["epoch_0002.json"]


@pytest.mark.parametrize("kwargs, message", [
    ({"frequency": 0}, "Argument `frequency` must be an integer >= 1"),
    ({"trace_probes": 3}, "Argument `trace_probes` must be 0 or an integer >= 6"),
    ({"layers": []}, "Argument `layers` must be a non-empty list"),
    ({"seed": None}, "Argument `seed` must be an integer >= 0"),
    ({"curvature": "fisher"}, "Argument `curvature` must be one of"),
    ({"tolerance": 0}, "Argument `tolerance` must be"),
])
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _monitor(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": ["nope"]}, "Argument `layer` names no layer of model"),
    ({"layers": ["head"], "k": 16}, "Argument `k` must be at most the 15 "
                                    "weights of 'head'"),
    ({"layers": ["head", "head"]}, "Argument `layers` must measure each set"),
])
def test_bad_layers_fail_before_the_first_epoch(kwargs, message):
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[_monitor(**kwargs)])
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_public_names():
    import keras_lrphase
    import keras_lrphase.analysis
    import keras_lrphase.callbacks
    import keras_lrphase.hessian

    assert keras_lrphase.HessianSpectrumMonitor is HessianSpectrumMonitor
    assert keras_lrphase.callbacks.HessianSpectrumMonitor is HessianSpectrumMonitor
    assert keras_lrphase.HessianOperator is HessianOperator
    assert keras_lrphase.hessian.load_spectrum_records is load_spectrum_records
    assert keras_lrphase.analysis.plot_hessian_density is plot_hessian_density
    for name in ("hessian_spectrum", "hessian_trace", "hessian_density",
                 "top_hessian_eigenvalues"):
        assert getattr(keras_lrphase, name) is getattr(keras_lrphase.hessian,
                                                       name)


def test_trajectory_events_without_epochs_draw_nothing(tmp_path):
    # A two-phase run without decays gives `{"decays": []}` and one that
    # never switched a switch epoch of None: no line and no label for them,
    # one dashed line per epoch for the others.
    x, y = _data()
    folder = tmp_path / "spectrum"
    _model().fit(x, y, batch_size=16, epochs=4, verbose=0,
                 callbacks=[_monitor(str(folder))])
    figure = plot_eigenvalue_trajectories(
        str(folder), events={"decays": [], "switch": None, "decay": [2, 4]})
    for axes in figure.axes:
        dashed = [line.get_xdata()[0] for line in axes.lines
                  if line.get_linestyle() == "--"]
        assert dashed == [2, 4]
        assert [text.get_text() for text in axes.texts] == [" decay"]
