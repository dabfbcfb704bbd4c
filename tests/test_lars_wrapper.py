"""Tests of `LARSWrapper` against `LARS` and NumPy references."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase.optimizers.lars import LARS
from optimizer_trajectories import ATOL
from optimizer_trajectories import RTOL
from optimizer_trajectories import assert_trajectory
from optimizer_trajectories import run
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
from keras_lrphase.schedules.controlled_learning_rate import (
    ControlledLearningRate,
)

pytestmark = pytest.mark.backend_neutral


RNG = np.random.default_rng(1)
W0 = RNG.normal(size=(3, 4)).astype(np.float32)
GRADS = [RNG.normal(scale=0.1, size=(3, 4)).astype(np.float32)
         for _ in range(4)]


def trust_ratio(w, g, trust_coefficient, epsilon, clip=False, lr=None):
    """The wrapper's ratio in float64 (1 when a norm is zero)."""
    w_norm = np.linalg.norm(np.asarray(w, np.float64))
    g_norm = np.linalg.norm(np.asarray(g, np.float64))
    if w_norm == 0 or g_norm == 0:
        return 1.0
    ratio = trust_coefficient * w_norm / (g_norm + epsilon)
    return min(ratio / lr, 1.0) if clip else ratio


def sgd_reference(w0, grads, lrs, momentum, trust_coefficient, epsilon,
                  clip=False, adapt=True, nesterov=False):
    """Keras SGD-momentum on trust-ratio-scaled gradients, in float64."""
    w = np.asarray(w0, np.float64)
    velocity = np.zeros_like(w)
    trajectory = []
    for lr, g in zip(lrs, grads):
        g = np.asarray(g, np.float64)
        if adapt:
            g = g * trust_ratio(w, g, trust_coefficient, epsilon, clip, lr)
        velocity = momentum * velocity - lr * g
        w = w + (momentum * velocity - lr * g if nesterov else velocity)
        trajectory.append(w.copy())
    return trajectory





# -- equivalences ------------------------------------------------------------
@pytest.mark.parametrize(
    "momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)]
)
def test_wrapper_around_sgd_equals_lars(momentum, nesterov):
    wrapper = LARSWrapper(
        keras.optimizers.SGD(0.5, momentum=momentum, nesterov=nesterov),
        trust_coefficient=0.01, epsilon=1e-3,
    )
    lars = LARS(0.5, momentum=momentum, nesterov=nesterov,
                trust_coefficient=0.01, epsilon=1e-3)
    bias0 = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    grads = [[g, g[0]] for g in GRADS]
    actual = run(wrapper, [W0, bias0], grads, names=["kernel", "bias"])
    expected = run(lars, [W0, bias0], grads, names=["kernel", "bias"])
    for a, e in zip(actual, expected):
        assert_trajectory(a, e)
    # And both follow the NumPy reference.
    assert_trajectory([a[0] for a in actual], sgd_reference(
        W0, GRADS, [0.5] * 4, momentum, 0.01, 1e-3, nesterov=nesterov))


def test_wrapper_around_adam_differs_by_trust_ratio_on_first_step():
    # Keras Adam's first step is lr * g_hat / (|g_hat| + eps / sqrt(1 - b2))
    # with g_hat the gradient it receives (its epsilon is not bias-corrected);
    # a large epsilon makes the trust ratio visible.
    lr, eps, coefficient = 0.1, 0.002, 0.01
    g = GRADS[0]
    ratio = trust_ratio(W0, g, coefficient, 1e-8)
    wrapper = LARSWrapper(keras.optimizers.Adam(lr, epsilon=eps),
                          trust_coefficient=coefficient)
    ((w_wrapped,),) = run(wrapper, [W0], [[g]])
    ((w_plain,),) = run(keras.optimizers.Adam(lr, epsilon=eps), [W0], [[g]])
    ((w_scaled,),) = run(keras.optimizers.Adam(lr, epsilon=eps), [W0],
                         [[g * ratio]])
    g64, w64 = g.astype(np.float64), W0.astype(np.float64)
    eps_hat = eps / np.sqrt(1.0 - 0.999)
    expected_wrapped = w64 - lr * ratio * g64 / (ratio * np.abs(g64) + eps_hat)
    expected_plain = w64 - lr * g64 / (np.abs(g64) + eps_hat)
    np.testing.assert_allclose(w_wrapped, expected_wrapped, rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(w_plain, expected_plain, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(w_wrapped, w_scaled, rtol=RTOL, atol=ATOL)
    assert np.max(np.abs(w_wrapped - w_plain)) > 1e-2


def test_clip_mode_is_larc():
    # ratio = 0.2 * 6 / 2 = 0.6. With lr = 1.0: min(0.6, 1) = 0.6; with
    # lr = 0.25: min(2.4, 1) = 1, i.e. the plain SGD step.
    w0 = np.full((2, 2), 3.0, np.float32)
    g = np.ones((2, 2), np.float32)
    for lr, expected in [(1.0, 3.0 - 1.0 * 0.6), (0.25, 3.0 - 0.25)]:
        wrapper = LARSWrapper(keras.optimizers.SGD(lr),
                              trust_coefficient=0.2, clip=True, epsilon=0.0)
        ((w,),) = run(wrapper, [w0], [[g]])
        np.testing.assert_allclose(w, expected, rtol=RTOL)


def test_clip_mode_trajectory_with_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        1.0, decay_steps=1, decay_rate=0.5
    )
    wrapper = LARSWrapper(keras.optimizers.SGD(schedule, momentum=0.9),
                          trust_coefficient=0.02, clip=True)
    grads = [g * 10 for g in GRADS]
    actual = run(wrapper, [W0], [[g] for g in grads])
    expected = sgd_reference(W0, grads, [1.0, 0.5, 0.25, 0.125], 0.9, 0.02,
                             1e-8, clip=True)
    assert_trajectory([a[0] for a in actual], expected)


def test_zero_weights_and_gradients():
    zeros = np.zeros((3, 4), np.float32)
    grads = [GRADS[0], zeros, GRADS[1]]
    for clip in (False, True):
        wrapper = LARSWrapper(keras.optimizers.SGD(0.5, momentum=0.9),
                              trust_coefficient=0.01, clip=clip, epsilon=0.0)
        actual = run(wrapper, [zeros], [[g] for g in grads])
        expected = sgd_reference(zeros, grads, [0.5] * 3, 0.9, 0.01, 0.0,
                                 clip=clip)
        # Step 1 has ||w|| = 0: the gradient is left unscaled.
        np.testing.assert_allclose(actual[0][0], -0.5 * GRADS[0], rtol=RTOL)
        assert_trajectory([a[0] for a in actual], expected)
    wrapper = LARSWrapper(keras.optimizers.SGD(0.5), epsilon=0.0)
    ((w,),) = run(wrapper, [zeros], [[zeros]])
    np.testing.assert_array_equal(w, zeros)


# -- exclusions --------------------------------------------------------------
BIAS0 = np.array([1.0, -2.0, 0.5, 3.0], np.float32)


@pytest.mark.parametrize(
    "exclusion, bias_adapts, kernel_adapts",
    [(None, False, True), ([], True, True), (["kernel"], True, False),
     ([r"^b\w+s$"], False, True), (lambda v: len(v.shape) == 2, True, False)],
    ids=["default_1d", "nothing", "name", "regex", "callable"],
)
def test_exclusions(exclusion, bias_adapts, kernel_adapts):
    wrapper = LARSWrapper(keras.optimizers.SGD(0.5, momentum=0.9),
                          trust_coefficient=0.01,
                          exclude_from_adaptation=exclusion)
    grads = [[g, g[1]] for g in GRADS]
    actual = run(wrapper, [W0, BIAS0], grads, names=["kernel", "bias"])
    assert_trajectory([a[0] for a in actual], sgd_reference(
        W0, GRADS, [0.5] * 4, 0.9, 0.01, 1e-8, adapt=kernel_adapts))
    assert_trajectory([a[1] for a in actual], sgd_reference(
        BIAS0, [g[1] for g in GRADS], [0.5] * 4, 0.9, 0.01, 1e-8,
        adapt=bias_adapts))


# -- delegation, LR mechanism, mixed precision -------------------------------
def test_delegates_learning_rate_and_iterations():
    inner = keras.optimizers.SGD(0.5)
    wrapper = LARSWrapper(inner)
    assert wrapper.inner_optimizer is inner
    wrapper.learning_rate = 0.25
    assert float(inner.learning_rate) == 0.25
    assert float(wrapper.learning_rate) == 0.25
    run(wrapper, [W0], [[GRADS[0]], [GRADS[1]]])
    assert int(wrapper.iterations) == 2 and int(inner.iterations) == 2
    assert all(any(v is w for w in wrapper.variables)
               for v in inner.variables)


def test_controlled_learning_rate_reaches_inner_optimizer():
    inner = keras.optimizers.SGD(0.5, momentum=0.9)
    wrapper = LARSWrapper(inner, trust_coefficient=0.01)
    controlled = ControlledLearningRate.install(wrapper)
    assert controlled.owner is inner
    trajectory = []
    w = keras.Variable(W0)
    for step, g in enumerate(GRADS[:3]):
        if step == 1:
            controlled.set_factor("x", 0.5)
        wrapper.apply([keras.ops.convert_to_tensor(g)], [w])
        trajectory.append(keras.ops.convert_to_numpy(w))
    assert_trajectory(trajectory, sgd_reference(
        W0, GRADS[:3], [0.5, 0.25, 0.25], 0.9, 0.01, 1e-8))


@pytest.mark.tensorflow_backend
def test_factor_halves_first_update_through_loss_scale_optimizer():
    scale = 2.0 ** 12
    updates = []
    for factor in (1.0, 0.5):
        inner = keras.optimizers.SGD(0.5, momentum=0.9)
        optimizer = keras.optimizers.LossScaleOptimizer(
            LARSWrapper(inner, trust_coefficient=0.01), initial_scale=scale
        )
        ControlledLearningRate.install(optimizer).set_factor("x", factor)
        run(optimizer, [W0], [[GRADS[0] * scale]])
        # Keras SGD: velocity = -lr * g and w1 = w0 + velocity.
        updates.append(keras.ops.convert_to_numpy(inner.momentums[0]))
    np.testing.assert_allclose(updates[1], 0.5 * updates[0], rtol=1e-6)
    np.testing.assert_allclose(
        updates[0],
        sgd_reference(W0, GRADS[:1], [0.5], 0.9, 0.01, 1e-8)[0] - W0,
        rtol=1e-4,
    )


def test_clip_mode_uses_the_controlled_learning_rate():
    # ratio = 0.2 * 6 / 2 = 0.6 < lr: LARC's update is ratio * g,
    # independent of the learning rate, so lr = 1 and lr = 0.8 agree...
    w0 = np.full((2, 2), 3.0, np.float32)
    g = np.ones((2, 2), np.float32)
    results = []
    for factor in (1.0, 0.8, 0.5):
        wrapper = LARSWrapper(keras.optimizers.SGD(1.0),
                              trust_coefficient=0.2, clip=True, epsilon=0.0)
        ControlledLearningRate.install(wrapper).set_factor("x", factor)
        ((w,),) = run(wrapper, [w0], [[g]])
        results.append(float(w[0, 0]))
    # ...until the controlled lr (0.5) falls below the ratio: the clipped
    # ratio is 1 and the step is plain SGD, 0.5 * g.
    np.testing.assert_allclose(results, [2.4, 2.4, 2.5], rtol=RTOL)


@pytest.mark.tensorflow_backend
def test_inside_loss_scale_optimizer_matches_unscaled():
    scale = 2.0 ** 10
    optimizer = keras.optimizers.LossScaleOptimizer(
        LARSWrapper(keras.optimizers.SGD(0.5, momentum=0.9),
                    trust_coefficient=0.01),
        initial_scale=scale,
    )
    actual = run(optimizer, [W0], [[g * scale] for g in GRADS])
    assert_trajectory([a[0] for a in actual], sgd_reference(
        W0, GRADS, [0.5] * 4, 0.9, 0.01, 1e-8))


def test_inner_loss_scale_factor_is_used_once():
    inner = keras.optimizers.SGD(0.5, momentum=0.9, loss_scale_factor=8.0)
    wrapper = LARSWrapper(inner, trust_coefficient=0.01)
    assert wrapper.loss_scale_factor == 8.0
    assert float(wrapper.scale_loss(1.0)) == 8.0
    actual = run(wrapper, [W0], [[g * 8.0] for g in GRADS])
    assert_trajectory([a[0] for a in actual], sgd_reference(
        W0, GRADS, [0.5] * 4, 0.9, 0.01, 1e-8))
    # LossScaleOptimizer switches the inner factor off, as for any optimizer.
    other = keras.optimizers.SGD(0.5, loss_scale_factor=8.0)
    keras.optimizers.LossScaleOptimizer(LARSWrapper(other))
    assert other.loss_scale_factor is None


def test_wrapping_leaves_the_inner_optimizer_as_it_was():
    # The wrapper delegates to the optimizer it wraps and patches nothing:
    # that object, used on its own after wrapping, is plain momentum SGD,
    # step for step the same as an optimizer that was never wrapped.
    wrapped = keras.optimizers.SGD(0.5, momentum=0.9)
    attributes = dict(vars(wrapped))
    LARSWrapper(wrapped, trust_coefficient=0.01)
    assert vars(wrapped) == attributes
    actual = run(wrapped, [W0], [[g] for g in GRADS])
    expected = run(keras.optimizers.SGD(0.5, momentum=0.9), [W0],
                   [[g] for g in GRADS])
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a[0], e[0])
    assert_trajectory([a[0] for a in actual], sgd_reference(
        W0, GRADS, [0.5] * 4, 0.9, 0.01, 1e-8, adapt=False))
    # After the wrapper has applied steps too, the inner optimizer's own
    # `apply` still updates without the trust ratio.
    inner = keras.optimizers.SGD(0.5)
    wrapper = LARSWrapper(inner, trust_coefficient=0.01)
    w = keras.Variable(W0)
    wrapper.apply([keras.ops.convert_to_tensor(GRADS[0])], [w])
    w1 = keras.ops.convert_to_numpy(w)
    inner.apply([keras.ops.convert_to_tensor(GRADS[1])], [w])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w),
                               w1 - 0.5 * GRADS[1], rtol=RTOL, atol=ATOL)
    assert not {"apply", "update_step", "_backend_update_step"} & set(
        vars(inner))


@pytest.mark.parametrize("clip", [False, True], ids=["lars", "larc_schedule"])
def test_fit_matches_reference(clip):
    # `fit` hands the gradients to `apply` (TensorFlow, torch) or to
    # `stateless_apply` (JAX): a linear model, whose gradient is known in
    # closed form, follows the NumPy reference step by step. In clip mode
    # the ratio reads the schedule's learning rate at each step.
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 1)).astype(np.float32)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
    ])
    lrs = [0.1, 0.05, 0.025, 0.0125] if clip else [0.1] * 4
    learning_rate = keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=1, decay_rate=0.5) if clip else 0.1
    model.compile(LARSWrapper(keras.optimizers.SGD(learning_rate, momentum=0.9),
                              trust_coefficient=0.02, clip=clip), loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    w = np.ones((3, 1))
    velocity = np.zeros_like(w)
    ratios = []
    for step, lr in enumerate(lrs):
        xb, yb = x[step % 2 * 4:][:4].astype(np.float64), y[step % 2 * 4:][:4]
        g = 2.0 * xb.T @ (xb @ w - yb) / 4
        ratios.append(trust_ratio(w, g, 0.02, 1e-8, clip, lr))
        velocity = 0.9 * velocity - lr * g * ratios[-1]
        w = w + velocity
    if clip:  # the learning rate decides the ratio: LARC's clip binds
        assert len(set(np.round(ratios, 6))) == 4
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=RTOL,
                               atol=ATOL)
    assert int(model.optimizer.iterations) == 4


def test_mixed_precision_fit_matches_reference():
    # A mixed_float16 model compiled with LossScaleOptimizer(LARSWrapper):
    # one step of a linear model, whose gradient is known in closed form.
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 1)).astype(np.float32)
    k0 = RNG.normal(size=(3, 1)).astype(np.float32)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(1, use_bias=False, dtype="mixed_float16"),
        keras.layers.Activation("linear", dtype="float32"),
    ])
    model.set_weights([k0])
    # A modest loss scale: 2**15 overflows float16 here and skips the step.
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(LARSWrapper(
            keras.optimizers.SGD(0.5), trust_coefficient=0.1),
            initial_scale=64.0),
        loss="mse",
    )
    model.train_on_batch(x, y)
    assert int(model.optimizer.iterations) == 1
    k64, x64 = k0.astype(np.float64), x.astype(np.float64)
    grad = 2.0 / len(x) * x64.T @ (x64 @ k64 - y)
    expected = k64 - 0.5 * trust_ratio(k64, grad, 0.1, 1e-8) * grad
    np.testing.assert_allclose(model.get_weights()[0], expected, rtol=2e-3)


# -- errors ------------------------------------------------------------------
@pytest.mark.parametrize(
    "optimizer",
    ["sgd", keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5), None],
)
def test_wrapping_a_non_optimizer_fails(optimizer):
    with pytest.raises(ValueError, match="`optimizer` must be a keras"):
        LARSWrapper(optimizer)


def test_wrapping_a_wrapper_fails():
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="must not itself wrap"):
        LARSWrapper(scaled)
    with pytest.raises(ValueError, match="must not itself wrap"):
        LARSWrapper(LARSWrapper(keras.optimizers.SGD()))


def test_wrapping_an_accumulating_optimizer_fails():
    sgd = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match=(
            "`optimizer` must not accumulate gradients.*"
            "gradient_accumulation_steps=2")):
        LARSWrapper(sgd)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(trust_coefficient=0.0), ValueError,
         r"`trust_coefficient` must be a finite number > 0. Received: trust_coefficient=0.0"),
        (dict(trust_coefficient=-0.1), ValueError, "trust_coefficient=-0.1"),
        (dict(epsilon=-1e-8), ValueError, "epsilon=-1e-08"),
        (dict(clip="yes"), ValueError, "`clip` must be True or False"),
        (dict(exclude_from_adaptation=[1]), ValueError,
         "`exclude_from_adaptation` must be None"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        LARSWrapper(keras.optimizers.SGD(), **kwargs)


# -- serialisation -----------------------------------------------------------
def test_config_round_trip():
    wrapper = LARSWrapper(
        keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(0.1, 100), beta_1=0.8
        ),
        trust_coefficient=0.02, clip=True, epsilon=1e-6,
        exclude_from_adaptation=["bn"], name="larc",
    )
    config = wrapper.get_config()
    assert config["optimizer"]["class_name"] == "Adam"
    restored = LARSWrapper.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    # torch builds its own Adam subclass; the class restored is still Adam.
    assert isinstance(restored.inner_optimizer, keras.optimizers.Adam)
    assert type(restored.inner_optimizer).__name__ == "Adam"
    assert restored.inner_optimizer is not wrapper.inner_optimizer
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(wrapper)
    )
    assert type(again) is LARSWrapper and again.get_config() == config


def test_config_round_trip_with_lars_inside():
    wrapper = LARSWrapper(LARS(0.3, weight_decay=1e-4), trust_coefficient=0.5)
    restored = LARSWrapper.from_config(wrapper.get_config())
    assert type(restored.inner_optimizer) is LARS
    assert restored.get_config() == wrapper.get_config()


def test_unregistered_callable_is_not_serialisable():
    wrapper = LARSWrapper(keras.optimizers.SGD(),
                          exclude_from_adaptation=lambda v: False)
    with pytest.raises(ValueError, match="not registered"):
        wrapper.get_config()


@pytest.mark.parametrize("inner", ["sgd", "adam", "loss_scaled_sgd"])
def test_save_and_load_compiled_model_restores_state(tmp_path, inner):
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 2)).astype(np.float32)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.Dense(2),
    ])
    optimizer = (keras.optimizers.Adam(0.01) if inner == "adam"
                 else keras.optimizers.SGD(0.2, momentum=0.9))
    wrapper = LARSWrapper(optimizer, trust_coefficient=0.02)
    if inner == "loss_scaled_sgd":
        wrapper = keras.optimizers.LossScaleOptimizer(wrapper,
                                                      initial_scale=64.0)
    model.compile(optimizer=wrapper, loss="mse")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    path = str(tmp_path / "wrapper.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(wrapper)
    restored = loaded.optimizer
    if inner == "loss_scaled_sgd":
        restored = restored.inner_optimizer
    assert type(restored) is LARSWrapper
    assert type(restored.inner_optimizer) is type(optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 2
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- tf.distribute -------------------------------------------------------------
MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_lrphase.optimizers.lars import LARS
    from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    init = [rng.normal(size=s).astype("float32")
            for s in [(3, 4), (4,), (4, 2), (2,)]]

    def trained(make, strategy=None):
        scope = strategy.scope() if strategy else keras.name_scope("single")
        with scope:
            model = keras.Sequential([
                keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                keras.layers.Dense(2)])
            model.set_weights(init)
            model.compile(optimizer=make(), loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for key, make in [
        ("lars", lambda: LARS(0.5, weight_decay=1e-2, trust_coefficient=0.05)),
        ("wrapper", lambda: keras.optimizers.LossScaleOptimizer(LARSWrapper(
            keras.optimizers.SGD(0.5, momentum=0.9),
            trust_coefficient=0.05))),
    ]:
        single, mirrored = trained(make), trained(make, strategy)
        out[key] = [
            max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)),
            max(float(np.max(np.abs(a - b))) for a, b in zip(single, init)),
        ]
    print(json.dumps(out))
""")


def test_mirrored_strategy_matches_single_device():
    # Two replicas of 8 samples: the ratio must come from the summed
    # gradient, so the weights equal single-device training on 16 samples.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute is TensorFlow-only")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
        text=True, timeout=600,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key, (difference, moved) in out.items():
        assert difference < 1e-6, key
        assert moved > 0.1, key
