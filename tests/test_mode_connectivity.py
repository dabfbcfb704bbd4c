import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm
from keras_lrphase.analysis.loss_plane import loss_plane
from keras_lrphase.analysis.loss_plane_plot import plot_loss_plane
from keras_lrphase.analysis.mode_connectivity import coefficients
from keras_lrphase.analysis.mode_connectivity import fit_curve
from keras_lrphase.analysis.mode_connectivity import linear_path

TS = (0.0, 0.1, 0.3, 0.5, 0.5001, 0.7, 0.95, 1.0)


def _bn_model(seed, compile=True):
    """Dense -> BatchNorm -> ReLU -> Dropout -> Dense, with distinct BN stats."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, name="dense")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Dropout(0.25, seed=seed)(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    if compile:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    weights[4] = rng.normal(size=5).astype("float32")  # moving mean
    weights[5] = rng.uniform(0.5, 2.0, size=5).astype("float32")  # variance
    model.set_weights(weights)
    return model


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)).astype("float32"),
            rng.integers(0, 3, size=n).astype("int32"))


@pytest.fixture(scope="module")
def bn_models():
    return _bn_model(1), _bn_model(2)


@pytest.fixture(scope="module")
def curves(bn_models):
    model_a, model_b = bn_models
    data = _data()
    return {kind: fit_curve(model_a, model_b, data, curve=kind, epochs=2,
                            batch_size=8, seed=3)
            for kind in ("bezier", "polychain")}


TRAINABLE = (0, 1, 2, 3, 6, 7)  # dense kernel/bias, BN gamma/beta, logits
MOVING = (4, 5)  # BN moving mean and variance


def _numpy_curve(kind, t, a, theta, b):
    if kind == "bezier":
        return (1 - t) ** 2 * a + 2 * t * (1 - t) * theta + t**2 * b
    if t <= 0.5:
        return 2 * (t * theta + (0.5 - t) * a)
    return 2 * ((t - 0.5) * b + (1 - t) * theta)


def test_end_points_are_the_models_bit_for_bit(bn_models, curves):
    model_a, model_b = bn_models
    for curve in list(curves.values()) + [linear_path(model_a, model_b)]:
        for got, want in zip(curve.weights_at(0.0), model_a.get_weights()):
            assert np.array_equal(got, want) and got.dtype == want.dtype
        for got, want in zip(curve.weights_at(1), model_b.get_weights()):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_points_follow_the_curve_formula(curves, kind):
    curve = curves[kind]
    a, b, theta = curve.start, curve.end, curve.bend
    for t in TS:
        point = curve.weights_at(t)
        for k in TRAINABLE:
            np.testing.assert_allclose(
                point[k], _numpy_curve(kind, t, a[k].astype(np.float64),
                                       theta[k].astype(np.float64),
                                       b[k].astype(np.float64)),
                rtol=1e-6, atol=1e-6)
        for k in MOVING:  # non-trainable weights: the straight segment
            np.testing.assert_allclose(point[k], (1 - t) * a[k] + t * b[k],
                                       rtol=1e-6, atol=1e-6)
    assert coefficients("bezier", 0.0) == (1.0, 0.0, 0.0)
    assert coefficients(kind, 1.0) == (0.0, 0.0, 1.0)


def test_polychain_passes_through_the_bend_at_one_half(curves):
    curve = curves["polychain"]
    for got, want in zip(curve.weights_at(0.5), curve.bend):
        assert np.array_equal(got, want)
    # Continuity: both branches agree at 0.5 (within float32 rounding).
    left, right = curve.weights_at(0.5 - 1e-7), curve.weights_at(0.5 + 1e-7)
    for u, w in zip(left, right):
        np.testing.assert_allclose(u, w, atol=1e-5)


def test_training_moves_only_the_bend(bn_models, curves):
    model_a, model_b = bn_models
    fresh_a, fresh_b = _bn_model(1), _bn_model(2)
    for model, fresh in ((model_a, fresh_a), (model_b, fresh_b)):
        for got, want in zip(model.get_weights(), fresh.get_weights()):
            assert np.array_equal(got, want)  # the models are untouched
    for curve in curves.values():
        for got, want in zip(curve.start, fresh_a.get_weights()):
            assert np.array_equal(got, want)
        for got, want in zip(curve.end, fresh_b.get_weights()):
            assert np.array_equal(got, want)
        mid = [0.5 * a + 0.5 * b for a, b in zip(curve.start, curve.end)]
        assert all(not np.array_equal(curve.bend[k], mid[k])
                   for k in TRAINABLE)
        assert all(np.array_equal(curve.bend[k], mid[k]) for k in MOVING)


def test_recalibration_sets_exact_batch_norm_statistics(curves):
    curve = curves["bezier"]
    x, y = _data(n=30, seed=5)
    before = curve.weights_at(0.4)
    # 30 samples in batches of 8: four uneven batches, exact statistics.
    after = curve.model_at(0.4, (x, y), batch_size=8).get_weights()
    for k in TRAINABLE:
        assert np.array_equal(before[k], after[k])
    bn_input = x.astype(np.float64) @ before[0] + before[1]
    np.testing.assert_allclose(after[4], bn_input.mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(after[5], bn_input.var(axis=0), rtol=1e-5)
    assert not np.allclose(after[4], before[4])


def test_recalibrate_batch_norm_in_place_restores_momentum():
    model = _bn_model(4)
    x, _ = _data(n=10)
    assert recalibrate_batch_norm(model, x, batch_size=3) == 1
    assert model.get_layer("bn").momentum == 0.99
    kernel, bias = model.get_weights()[:2]
    np.testing.assert_allclose(model.get_weights()[4],
                               (x @ kernel + bias).mean(axis=0), atol=1e-6)


def test_evaluate_at_the_end_points_matches_model_evaluate(bn_models, curves):
    model_a, model_b = bn_models
    x, y = _data()
    result = curves["bezier"].evaluate([0.0, 1.0], (x, y), batch_size=8)
    for value, model in zip(result["loss"], (model_a, model_b)):
        loss, _ = model.evaluate(x, y, batch_size=8, verbose=0)
        assert value == pytest.approx(loss, rel=1e-6)
    with pytest.warns(UserWarning, match="recalibrate_data"):
        linear_path(model_a, model_b).evaluate([0.5], (x, y))


def _ring_model(shift, k=6, scale=4.0, threshold=2.06):
    """A hand-built minimum for 'is |x| > 1.1': k ReLU units at even angles.

    Rolling the hidden units by k/2 gives the same function, but the
    segment's mid-point has a zero first layer (a constant prediction).
    """
    angles = 2 * np.pi * np.arange(k) / k
    kernel = np.stack([np.cos(angles), np.sin(angles)]).astype("float32")
    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.Dense(k, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    head = np.zeros((k, 2), "float32")
    head[:, 1] = scale
    model.set_weights([kernel[:, np.roll(np.arange(k), shift)],
                       np.zeros(k, "float32"), head,
                       np.array([0.0, -scale * threshold], "float32")])
    return model


def _ring_data(n=128):
    x = np.random.default_rng(0).normal(size=(n, 2)).astype("float32")
    return x, (np.linalg.norm(x, axis=1) > 1.1).astype("int32")


def test_curve_avoids_the_barrier_of_the_segment():
    model_a, model_b = _ring_model(0), _ring_model(3)
    data = _ring_data()
    ts = np.linspace(0.0, 1.0, 11)
    segment = linear_path(model_a, model_b).evaluate(ts, data)["loss"]
    curve = fit_curve(model_a, model_b, data, epochs=20, batch_size=32,
                      optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    along = curve.evaluate(ts, data)["loss"]
    assert segment[0] == along[0] and segment[-1] == along[-1] < 0.15
    assert segment.max() > 4.0
    assert along.max() < 0.5


def test_loss_plane_anchors_and_grid_losses_are_exact(tmp_path):
    model_a, model_b = _ring_model(0), _ring_model(3)
    theta = [0.5 * (a + b) + 0.3 for a, b in zip(model_a.get_weights(),
                                                 model_b.get_weights())]
    data = _ring_data(n=32)
    iterate = [0.7 * a + 0.3 * b for a, b in zip(model_a.get_weights(),
                                                  model_b.get_weights())]
    plane = loss_plane(model_a, model_b, theta, model_a, data, grid=5,
                       points=[iterate, model_b])
    w1, w2, w3 = model_a.get_weights(), model_b.get_weights(), theta
    flat = [np.concatenate([np.ravel(w).astype(np.float64) for w in ws])
            for ws in (w1, w2, w3)]
    dx = np.linalg.norm(flat[1] - flat[0])
    u = (flat[1] - flat[0]) / dx
    x3 = (flat[2] - flat[0]) @ u
    dy = np.linalg.norm(flat[2] - flat[0] - x3 * u)
    np.testing.assert_array_equal(plane.anchors, [[0, 0], [dx, 0], [x3, dy]])
    np.testing.assert_allclose([plane.project(w) for w in (w1, w2, w3)],
                               plane.anchors, atol=1e-9)
    np.testing.assert_allclose(plane.projections[1], [dx, 0], atol=1e-9)
    probe = keras.models.clone_model(model_a)
    probe.compile(loss=model_a.loss)
    for (px, py), weights in zip(plane.anchors, (w1, w2, w3)):
        i, j = list(plane.y).index(py), list(plane.x).index(px)
        probe.set_weights(weights)
        assert plane.loss[i, j] == pytest.approx(
            probe.evaluate(*data, batch_size=128, verbose=0), rel=1e-6)
    # A grid point off the anchors: w1 + x u + y v.
    i, j = 1, 1
    point = flat[0] + plane.x[j] * plane.u + plane.y[i] * plane.v
    sizes = np.cumsum([w.size for w in w1])[:-1]
    probe.set_weights([p.reshape(w.shape) for p, w in
                       zip(np.split(point, sizes), w1)])
    assert plane.loss[i, j] == pytest.approx(
        probe.evaluate(*data, batch_size=128, verbose=0), rel=1e-5)
    assert plane.loss.shape == (len(plane.y), len(plane.x))
    path = tmp_path / "plane.png"
    plot_loss_plane(plane, str(path), title="ring")
    assert path.stat().st_size > 1000


def test_bad_arguments_raise_before_training(bn_models):
    model_a, model_b = bn_models
    data = _data()
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"Argument `model_b` must have the "
                       r"architecture of .*Received: model_b="):
        fit_curve(model_a, other, data, epochs=10**9)
    with pytest.raises(ValueError, match=r"Argument `curve` must be one of "
                       r"\['bezier', 'polychain'\]. Received: curve='spline'"):
        fit_curve(model_a, model_b, data, curve="spline", epochs=10**9)
    uncompiled = _bn_model(1, compile=False)
    with pytest.raises(ValueError, match=r"Argument `loss` must be given "
                       r"when model .* is not compiled.*Received: loss=None"):
        fit_curve(uncompiled, model_b, data, epochs=10**9)
    with pytest.raises(ValueError, match=r"Argument `epochs` must be an "
                       r"integer >= 1. Received: epochs=0"):
        fit_curve(model_a, model_b, data, epochs=0)
    path = linear_path(model_a, model_b)
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"Argument `t` must be a number "
                           r"in \[0, 1\]. Received: t="):
            path.weights_at(t)
    with pytest.raises(ValueError, match=r"Argument `ts` must be a number"):
        path.evaluate([0.0, 2.0], data)
    with pytest.raises(ValueError, match=r"Argument `w3` must not be "
                       r"collinear"):
        loss_plane(model_a, model_b, path.weights_at(0.25), model_a, data)


JAX_SCRIPT = textwrap.dedent("""
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from keras_lrphase.analysis.mode_connectivity import fit_curve, linear_path
    sys_path_tests = __import__("sys").argv[1]
    __import__("sys").path.insert(0, sys_path_tests)
    from test_mode_connectivity import (_bn_model, _data, _ring_model,
                                        _ring_data)
    a, b = _bn_model(1), _bn_model(2)
    curve = fit_curve(a, b, _data(), curve="polychain", epochs=2,
                      batch_size=8)
    assert all(np.array_equal(g, w) for g, w in
               zip(curve.weights_at(0.0), a.get_weights()))
    assert all(np.array_equal(g, w) for g, w in
               zip(curve.weights_at(0.5), curve.bend))
    moved = curve.model_at(0.3, _data()).get_weights()
    assert not np.allclose(moved[4], curve.weights_at(0.3)[4])
    ra, rb = _ring_model(0), _ring_model(3)
    data = _ring_data()
    ts = np.linspace(0, 1, 11)
    segment = linear_path(ra, rb).evaluate(ts, data)["loss"].max()
    fitted = fit_curve(ra, rb, data, epochs=20, batch_size=32,
                       optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    along = fitted.evaluate(ts, data)["loss"].max()
    print("max losses", segment, along)
    assert segment > 4.0 and along < 0.5
""")


@pytest.mark.jax
def test_fit_curve_on_jax_backend():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, os.path.dirname(__file__)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max losses" in result.stdout


def test_the_plane_is_drawn_to_scale_unless_it_is_a_sliver():
    from keras_lrphase.analysis.loss_plane import LossPlane

    def plane(height):
        x, y = np.linspace(0, 30, 5), np.linspace(0, height, 4)
        loss = 1.0 + x[None, :] + y[:, None]
        anchors = np.array([[0.0, 0.0], [30.0, 0.0], [15.0, height]])
        return LossPlane(x, y, loss, np.full_like(loss, np.nan), anchors,
                         np.zeros((0, 2)), None, None, None, ())

    assert plot_loss_plane(plane(10.0)).axes[0].get_aspect() == 1.0
    assert plot_loss_plane(plane(1.0)).axes[0].get_aspect() == "auto"
    assert plot_loss_plane(plane(1.0), aspect="equal").axes[0].get_aspect() == 1.0
    with pytest.raises(ValueError, match="Argument `aspect` must be one of"):
        plot_loss_plane(plane(1.0), aspect="square")


def test_recalibrating_one_model_again_traces_once():
    # A loss plane recalibrates one model at every grid point: one trace,
    # not one tf.function (and a retracing warning) per point.
    model = _bn_model(0)
    x, _ = _data()
    assert recalibrate_batch_norm(model, x, batch_size=16) == 1
    # Other weights, the same compiled function: the statistics of those
    # weights, as a model that never recalibrated before computes them.
    model.set_weights(_bn_model(3).get_weights())
    fresh = _bn_model(3)
    recalibrate_batch_norm(model, x, batch_size=16)
    recalibrate_batch_norm(fresh, x, batch_size=16)
    for got, want in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    compiled = model.__dict__["_keras_lrphase_batch_moments"]
    if keras.backend.backend() == "tensorflow":
        assert compiled.experimental_get_tracing_count() <= 2
