import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from hessian_references import softmax
from hessian_references import softmax_cross_entropy_dense_hessian
from hessian_references import top_eigenvalue
from keras_lrphase import HessianMonitor


def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 3, size=64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, x, y


class ExactEigenvalue(keras.callbacks.Callback):
    """Records the closed-form eigenvalue and what the monitor logged."""

    def __init__(self, x):
        super().__init__()
        self.x, self.exact, self.logged = x, [], []

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(self.x, verbose=0)
        hessian = softmax_cross_entropy_dense_hessian(self.x, softmax(logits))
        self.exact.append(top_eigenvalue(hessian))
        self.logged.append(logs.get("hessian_max_eigenvalue"))


def test_logs_exact_eigenvalue_every_frequency_epochs():
    model, x, y = problem()
    recorder = ExactEigenvalue(x)
    monitor = HessianMonitor((x, y), frequency=2, method="lanczos", seed=0)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
              callbacks=[monitor, recorder])
    # Every epoch has the key (CSVLogger fixes its columns at epoch 0): NaN
    # in the epochs without an estimate.
    assert np.isnan(recorder.logged[0]) and np.isnan(recorder.logged[2])
    for epoch in (1, 3):
        assert recorder.logged[epoch] == pytest.approx(recorder.exact[epoch], rel=1e-3)


def test_history_and_csv_logger_record_the_eigenvalue(tmp_path):
    model, x, y = problem()
    path = tmp_path / "log.csv"
    history = model.fit(
        x, y, batch_size=16, epochs=3, verbose=0,
        callbacks=[HessianMonitor((x, y), seed=0),
                   keras.callbacks.CSVLogger(str(path))],
    )
    assert len(history.history["hessian_max_eigenvalue"]) == 3
    assert all(i >= 2 for i in history.history["hessian_iterations"])
    header = path.read_text().splitlines()[0].split(",")
    assert "hessian_max_eigenvalue" in header


def test_warm_starts_from_previous_vector_and_uses_first_dataset_batch():
    model, x, y = problem()
    calls = []

    def estimator(model, xb, yb, initial_vector=None):
        calls.append((xb.shape[0], initial_vector))
        return types.SimpleNamespace(value=float(len(calls)), vector=[len(calls)], iterations=1)

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(40)
    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[HessianMonitor(dataset, estimator=estimator)])
    assert [size for size, _ in calls] == [40, 40, 40]
    assert [vector for _, vector in calls] == [None, [1], [2]]


def test_the_batch_goes_to_the_device_once_and_each_estimate_is_timed(
        monkeypatch):
    # The eigenvalue's batch was converted to the backend's tensors (a
    # host-to-device copy on an accelerator) at every estimate.
    model, x, y = problem()
    xh, yh = x[:40], y[:40]  # the Hessian batch: a shape fit never converts
    converted = []
    convert = keras.ops.convert_to_tensor

    def counting(value, *args, **kwargs):
        if isinstance(value, np.ndarray) and value.shape == xh.shape:
            converted.append(value)
        return convert(value, *args, **kwargs)

    class Weights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.exact = []

        def on_epoch_end(self, epoch, logs=None):
            kernel, bias = (np.asarray(w) for w in self.model.get_weights())
            probabilities = softmax(xh @ kernel + bias)
            self.exact.append(top_eigenvalue(
                softmax_cross_entropy_dense_hessian(xh, probabilities)))

    monkeypatch.setattr(keras.ops, "convert_to_tensor", counting)
    clock = iter(range(100))
    monkeypatch.setattr(  # the provider's clock only
        "keras_lrphase.providers.hessian_eigenvalue.time",
        types.SimpleNamespace(perf_counter=lambda: 1.5 * next(clock)),
        raising=False)
    weights = Weights()
    monitor = HessianMonitor((xh, yh), frequency=2, method="lanczos", seed=0)
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0,
                        shuffle=False, callbacks=[monitor, weights])
    assert len([a for a in converted if np.array_equal(a, xh)]) == 1
    values = history.history["hessian_max_eigenvalue"]
    for epoch in (1, 3):  # the same estimate as from the arrays
        assert values[epoch] == pytest.approx(weights.exact[epoch], rel=1e-3)
    # Two readings of the fake clock, 1.5 s apart, per estimate.
    times = history.history["hessian_time"]
    assert np.isnan(times[0]) and np.isnan(times[2])
    assert times[1] == times[3] == 1.5


def test_does_no_per_batch_work():
    per_batch = [
        name for name in vars(HessianMonitor)
        if "batch" in name and name.startswith("on_")
    ]
    assert per_batch == []


@pytest.mark.parametrize("frequency", [0, -1, 1.5, True])
def test_rejects_bad_frequency(frequency):
    _, x, y = problem()
    with pytest.raises(ValueError, match="frequency"):
        HessianMonitor((x, y), frequency=frequency)


def test_rejects_bad_data_and_arguments_at_construction():
    _, x, y = problem()
    with pytest.raises(ValueError, match="same batch size"):
        HessianMonitor((x, y[:3]))
    with pytest.raises(ValueError, match="method='newton'"):
        HessianMonitor((x, y), method="newton")
    with pytest.raises(ValueError, match="tuple"):
        HessianMonitor(x)
