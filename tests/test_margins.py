import csv
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.margins import normalized_margins
from keras_lrphase.analysis.margins import quartile_statistics
from keras_lrphase.callbacks.margin_monitor import KEYS
from keras_lrphase.callbacks.margin_monitor import MarginMonitor

pytestmark = pytest.mark.backend_neutral


def _linear_problem(samples=24, features=5, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features)).astype("float32")
    y = rng.integers(0, classes, samples)
    w = rng.normal(size=(features, classes)).astype("float32")
    b = rng.normal(size=classes).astype("float32")
    return x, y, w, b


def _linear_model(w, b, activation=None):
    model = keras.Sequential([keras.Input((w.shape[0],)),
                              keras.layers.Dense(w.shape[1],
                                                 activation=activation)])
    model.set_weights([w, b])
    return model


def _closed_form(x, y, w, b):
    """d = (f_i - f_j) / ||W_i - W_j|| / sqrt(tr Cov(x)), in float64."""
    x, w, b = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    f = x @ w + b
    rows = np.arange(len(x))
    others = f.copy()
    others[rows, y] = -np.inf
    j = np.argmax(others, axis=1)
    distance = (f[rows, y] - f[rows, j]) / np.linalg.norm(w.T[y] - w.T[j],
                                                          axis=1)
    return distance / np.sqrt(np.trace(np.cov(x.T, bias=True)))


def test_linear_model_margins_in_closed_form():
    x, y, w, b = _linear_problem()
    expected = _closed_form(x, y, w, b)
    margins = normalized_margins(_linear_model(w, b), x, y)
    np.testing.assert_allclose(margins, expected, rtol=5e-6, atol=1e-7)


def test_batches_padding_and_one_hot_labels_give_the_same_margins():
    x, y, w, b = _linear_problem(samples=23)
    expected = _closed_form(x, y, w, b)
    model = _linear_model(w, b)
    one_hot = np.eye(4, dtype="float32")[y]
    for labels, batch_size in ((y, 5), (one_hot, 23), (y[:, None], 100)):
        margins = normalized_margins(model, x, labels, batch_size=batch_size)
        np.testing.assert_allclose(margins, expected, rtol=5e-6, atol=1e-7)


def test_misclassified_samples_have_negative_margins():
    x, y, w, b = _linear_problem()
    margins = normalized_margins(_linear_model(w, b), x, y)
    wrong = np.argmax(x @ w + b, axis=1) != y
    assert 0 < wrong.sum() < len(y)
    np.testing.assert_array_equal(margins < 0, wrong)


@pytest.mark.parametrize("form", ["dense_activation", "softmax_layer",
                                  "activation_layer"])
def test_softmax_output_uses_the_logits(form):
    x, y, w, b = _linear_problem()
    if form == "dense_activation":
        model = _linear_model(w, b, activation="softmax")
    else:
        last = (keras.layers.Softmax() if form == "softmax_layer"
                else keras.layers.Activation("softmax"))
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4),
                                  last])
        model.layers[0].set_weights([w, b])
    margins = normalized_margins(model, x, y)
    np.testing.assert_allclose(margins, _closed_form(x, y, w, b), rtol=5e-6,
                               atol=1e-7)
    # The output layer itself is untouched.
    assert np.allclose(np.sum(model.predict(x, verbose=0), axis=1), 1.0)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h1 = keras.layers.Dense(6, activation="tanh", name="h1")(inputs)
    h2 = keras.layers.Dense(5, activation="tanh", name="h2")(h1)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h2)
    return keras.Model(inputs, outputs)


def _mlp_logits(model, h1):
    """The logits as a NumPy float64 function of h1 (the input of h2)."""
    w2, b2, w3, b3 = (np.asarray(a, np.float64) for a in
                      model.get_layer("h2").get_weights()
                      + model.get_layer("out").get_weights())
    return np.tanh(h1 @ w2 + b2) @ w3 + b3


def test_hidden_layer_margins_agree_with_finite_difference_jacobian():
    model = _mlp()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 4)).astype("float32")
    y = rng.integers(0, 3, 12)
    w1, b1 = (np.asarray(a, np.float64)
              for a in model.get_layer("h1").get_weights())
    h = np.tanh(x.astype(np.float64) @ w1 + b1)
    logits = _mlp_logits(model, h)
    rows = np.arange(len(x))
    others = logits.copy()
    others[rows, y] = -np.inf
    j = np.argmax(others, axis=1)
    step, expected = 1e-6, []
    for n in rows:
        difference = np.zeros(h.shape[1])
        for k in range(h.shape[1]):
            up, down = h[n].copy(), h[n].copy()
            up[k] += step
            down[k] -= step
            change = _mlp_logits(model, up) - _mlp_logits(model, down)
            difference[k] = (change[y[n]] - change[j[n]]) / (2 * step)
        expected.append((logits[n, y[n]] - logits[n, j[n]])
                        / np.linalg.norm(difference))
    expected = np.array(expected) / np.sqrt(np.sum(np.var(h, axis=0)))
    margins = normalized_margins(model, x, y, layer="h2")
    np.testing.assert_allclose(margins, expected, rtol=1e-5, atol=1e-6)
    # The layer object works as its name does.
    np.testing.assert_array_equal(
        normalized_margins(model, x, y, layer=model.get_layer("h2")), margins)


def test_quartile_statistics_against_percentiles():
    rng = np.random.default_rng(2)
    margins = rng.normal(size=101)
    margins[[3, 40]] = np.nan  # not finite: left out
    finite = margins[np.isfinite(margins)]
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    inner = [m for m in finite if q1 <= m <= q3]
    stats = quartile_statistics(margins)
    assert stats == {"margin_q1": q1, "margin_median": median,
                     "margin_q3": q3, "margin_mean_iqr": np.mean(inner)}
    # Both quartiles are included: here they are sample values, with ties.
    tied = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 9.0, 100.0])
    assert quartile_statistics(tied)["margin_mean_iqr"] == 3.5  # 2,2,3,4,5,5
    assert all(math.isnan(v) for v in quartile_statistics([np.nan]).values())


def test_bad_arguments_name_the_argument_and_value():
    x, y, w, b = _linear_problem()
    model = _linear_model(w, b)
    with pytest.raises(ValueError, match=r"`layer`.*layer='nope'"):
        normalized_margins(model, x, y, layer="nope")
    with pytest.raises(ValueError, match=r"`y`.*class indices in \[0, 4\)"):
        normalized_margins(model, x, np.full(len(x), 4))
    with pytest.raises(ValueError, match=r"`y`.*\[-1"):
        normalized_margins(model, x, np.full(len(x), -1))
    with pytest.raises(ValueError, match=r"`batch_size`.*batch_size=True"):
        normalized_margins(model, x, y, batch_size=True)
    with pytest.raises(ValueError, match=r"`x`.*total variation is 0"):
        normalized_margins(model, np.ones((3, 5), "float32"), [0, 1, 2])
    binary = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"`model`.*classes >= 2"):
        normalized_margins(binary, x, y)


def _monitored_fit(every, tmp_path):
    x, y, w, b = _linear_problem()
    model = _linear_model(w, b)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = MarginMonitor((x, y), every=every, batch_size=10)
    log = str(tmp_path / "log.csv")

    class Expected(keras.callbacks.Callback):
        rows = []

        def on_epoch_end(self, epoch, logs=None):
            self.rows.append(quartile_statistics(normalized_margins(
                self.model, x, y)))

    expected = Expected()
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0,
                        callbacks=[monitor, expected,
                                   keras.callbacks.CSVLogger(log)])
    return history, expected.rows, log


def test_monitor_logs_every_key_every_epoch(tmp_path):
    history, expected, log = _monitored_fit(2, tmp_path)
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for epoch in range(4):
        for key in KEYS:
            logged = history.history[key][epoch]
            assert key in rows[epoch]
            if epoch % 2 == 0:
                assert math.isnan(logged) and rows[epoch][key] == "nan"
            else:
                assert logged == pytest.approx(expected[epoch][key], rel=1e-6)
                assert float(rows[epoch][key]) == pytest.approx(logged)


def test_monitor_bad_arguments():
    x, y, w, b = _linear_problem()
    for every in (0, True, 1.5):
        with pytest.raises(ValueError, match=f"`every`.*every={every!r}"):
            MarginMonitor((x, y), every=every)
    with pytest.raises(ValueError, match=r"`data`.*tuple `\(x, y\)`"):
        MarginMonitor(x)
    with pytest.raises(ValueError, match=r"`data`"):
        MarginMonitor((x,))
    model = _linear_model(w, b)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    for monitor, message in (
        (MarginMonitor((x, y), layer="nope"), r"`layer`.*layer='nope'"),
        (MarginMonitor((x, y + 4)), r"`y`.*in \[0, 4\)"),
    ):
        with pytest.raises(ValueError, match=message):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])


@pytest.mark.jax
def test_linear_margins_on_jax_backend():
    pytest.importorskip("jax")
    x, y, w, b = _linear_problem()
    script = textwrap.dedent("""
        import sys, numpy as np, keras
        from keras_lrphase.analysis.margins import normalized_margins
        data = np.load(sys.argv[1])
        model = keras.Sequential([keras.Input((5,)),
                                  keras.layers.Dense(4, activation="softmax")])
        model.set_weights([data["w"], data["b"]])
        np.save(sys.argv[2], normalized_margins(model, data["x"], data["y"],
                                                batch_size=7))
        print(keras.backend.backend())
    """)
    folder = os.environ.get("PYTEST_TMP", None)
    import tempfile

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        inputs, output = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npy")
        np.savez(inputs, x=x, y=y, w=w, b=b)
        env = dict(os.environ, KERAS_BACKEND="jax")
        done = subprocess.run([sys.executable, "-c", script, inputs, output],
                              env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().endswith("jax")
        np.testing.assert_allclose(np.load(output), _closed_form(x, y, w, b),
                                   rtol=5e-6, atol=1e-7)
