import csv
import math

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.parameter_change_plot import plot_parameter_change
from keras_lrphase.callbacks.parameter_change_monitor import (
    ParameterChangeMonitor,
)
from keras_lrphase.callbacks.parameter_change_monitor import merged_weights
from keras_lrphase.callbacks.parameter_change_monitor import parameter_groups

pytestmark = pytest.mark.backend_neutral


def _model(seed=0):
    """input BN (alone) -> conv -> BN (merged) -> relu -> flatten -> dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.BatchNormalization(name="bn_in")(inputs)
    x = keras.layers.Conv2D(3, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(16, 5, 5, 2)).astype("float32"),
            rng.normal(size=(16, 2)).astype("float32"))


class _Weights(keras.callbacks.Callback):
    """Each layer's weights (by name) at every epoch's start and end."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def _read(self):
        return {layer.name: [np.asarray(w, np.float64)
                             for w in layer.get_weights()]
                for layer in self.model.layers}

    def on_epoch_begin(self, epoch, logs=None):
        self.begin.append(self._read())

    def on_epoch_end(self, epoch, logs=None):
        self.end.append(self._read())


def _fit(every, tmp_path=None, epochs=3):
    model, (x, y) = _model(), _data()
    weights = _Weights()
    callbacks = [ParameterChangeMonitor(every=every), weights]
    if tmp_path is not None:
        callbacks.append(keras.callbacks.CSVLogger(str(tmp_path / "log.csv")))
    history = model.fit(x, y, epochs=epochs, batch_size=4, verbose=0,
                        callbacks=callbacks)
    return model, history, weights


def _numpy_merged(conv, bn, epsilon):
    kernel, bias = conv
    gamma, beta, mean, variance = bn
    scale = gamma / np.sqrt(variance + epsilon)
    return kernel * scale[None, None, None, :], beta + (bias - mean) * scale


def test_conv_batch_norm_pairs_are_found_in_the_graph():
    model = _model()
    groups = [(layer.name, norm and norm.name)
              for layer, norm in parameter_groups(model)]
    assert groups == [("bn_in", None), ("conv", "bn"), ("head", None)]


def test_changes_equal_direct_norms_and_the_merged_formula():
    model, history, weights = _fit(every=1)
    assert sorted(k for k in history.history if k.startswith("param")) == [
        "param_change/bn_in", "param_change/conv", "param_change/conv/bias",
        "param_change/head", "param_change/head/bias"]
    for epoch in range(3):
        begin, end = weights.begin[epoch], weights.end[epoch]
        logged = {k: v[epoch] for k, v in history.history.items()}
        for index, key in ((0, "param_change/head"),
                           (1, "param_change/head/bias")):
            change = end["head"][index] - begin["head"][index]
            assert logged[key] == pytest.approx(
                np.sqrt(np.sum(change ** 2)), rel=1e-12)
        # bn_in alone: its trainable weights (gamma, beta) together.
        change = np.concatenate([end["bn_in"][i] - begin["bn_in"][i]
                                 for i in (0, 1)])
        assert logged["param_change/bn_in"] == pytest.approx(
            np.linalg.norm(change), rel=1e-12)
        start = _numpy_merged(begin["conv"], begin["bn"], 1e-3)
        stop = _numpy_merged(end["conv"], end["bn"], 1e-3)
        for index, key in ((0, "param_change/conv"),
                           (1, "param_change/conv/bias")):
            assert logged[key] == pytest.approx(
                np.linalg.norm((stop[index] - start[index]).ravel()),
                rel=1e-10)
            assert logged[key] > 0


def test_merged_weights_without_bias_scale_or_center():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(2, 3))
    mean, variance = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    merged_kernel, merged_bias = merged_weights(kernel, None, None, None,
                                                mean, variance, 0.01)
    np.testing.assert_allclose(merged_kernel,
                               kernel / np.sqrt(variance + 0.01), rtol=1e-15)
    np.testing.assert_allclose(merged_bias, -mean / np.sqrt(variance + 0.01),
                               rtol=1e-15)


def test_every_key_every_epoch_nan_when_skipped(tmp_path):
    _, history, _ = _fit(every=2, tmp_path=tmp_path, epochs=4)
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in history.history if k.startswith("param_change/")]
    assert len(keys) == 5 and len(rows) == 4
    for epoch, row in enumerate(rows):
        assert float(row["learning_rate"]) == pytest.approx(0.05)
        for key in keys:
            skipped = epoch % 2 == 0
            assert math.isnan(float(row[key])) == skipped
            assert math.isnan(history.history[key][epoch]) == skipped


@pytest.mark.parametrize("every", [0, -1, True, 2.0, "1"])
def test_bad_every_is_rejected(every):
    with pytest.raises(ValueError, match=f"`every`.*every={every!r}"):
        ParameterChangeMonitor(every=every)


def test_plot_from_csv_and_rows(tmp_path):
    _fit(every=1, tmp_path=tmp_path)
    figure = plot_parameter_change(str(tmp_path / "log.csv"),
                                   str(tmp_path / "change.png"))
    assert (tmp_path / "change.png").stat().st_size > 0
    # Two panels (kernels, biases), each with its learning-rate axis.
    assert len(figure.axes) == 4
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["bn_in", "conv", "head"]
    with pytest.raises(ValueError, match="`history`"):
        plot_parameter_change([{"loss": 1.0}], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="`yscale`.*yscale='cubic'"):
        plot_parameter_change([{"param_change/a": 1.0}],
                              str(tmp_path / "x.png"), yscale="cubic")
