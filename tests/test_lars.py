"""Tests of `LARS` against a NumPy reference of its update rule."""

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
from keras_lrphase.schedules.controlled_learning_rate import (
    ControlledLearningRate,
)
from keras_lrphase.backend import keras_compat

pytestmark = pytest.mark.backend_neutral



# -- NumPy reference ---------------------------------------------------------
def lars_reference(w0, grads, learning_rates, momentum=0.9, weight_decay=0.0,
                   trust_coefficient=0.001, epsilon=0.0, nesterov=False,
                   adapt=True, decay=True):
    """Weights after each step of the LARS rule, in float64."""
    w = np.asarray(w0, np.float64)
    velocity = np.zeros_like(w)
    wd = weight_decay if decay else 0.0
    trajectory = []
    for lr, g in zip(learning_rates, grads):
        g = np.asarray(g, np.float64)
        local_lr = 1.0
        if adapt:
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            if w_norm > 0 and g_norm > 0:
                local_lr = (trust_coefficient * w_norm
                            / (g_norm + wd * w_norm + epsilon))
        step = lr * local_lr * (g + wd * w)
        velocity = momentum * velocity + step
        w = w - (momentum * velocity + step if nesterov else velocity)
        trajectory.append(w.copy())
    return trajectory





RNG = np.random.default_rng(0)
W0 = RNG.normal(size=(3, 4)).astype(np.float32)
GRADS = [RNG.normal(scale=0.1, size=(3, 4)).astype(np.float32)
         for _ in range(4)]


# -- golden trajectories -----------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(momentum=0.9),
        dict(momentum=0.0),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.9, weight_decay=5e-2),
        dict(momentum=0.8, weight_decay=1e-2, nesterov=True, epsilon=1e-3),
        dict(momentum=0.9, trust_coefficient=0.02),
    ],
    ids=["momentum", "no_momentum", "nesterov", "weight_decay",
         "all_options", "coefficient"],
)
def test_trajectory_matches_reference(kwargs):
    kwargs.setdefault("trust_coefficient", 0.01)
    optimizer = LARS(learning_rate=0.5, **kwargs)
    actual = run(optimizer, [W0], [[g] for g in GRADS])
    expected = lars_reference(W0, GRADS, [0.5] * 4, **kwargs)
    assert_trajectory([a[0] for a in actual], expected)


def test_first_step_by_hand():
    # ||w|| = 6, ||g|| = 2, wd * ||w|| = 0.6: local_lr = 0.1 * 6 / 2.6.
    # velocity = 1.0 * local_lr * (1 + 0.1 * 3); w = 3 - velocity.
    optimizer = LARS(learning_rate=1.0, momentum=0.5, weight_decay=0.1,
                     trust_coefficient=0.1)
    w = keras.Variable(np.full((2, 2), 3.0, np.float32))
    optimizer.apply([keras.ops.ones((2, 2))], [w])
    local_lr = 0.1 * 6.0 / 2.6
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(w), 3.0 - local_lr * 1.3, rtol=RTOL
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(optimizer.velocities[0]), local_lr * 1.3,
        rtol=RTOL,
    )


def test_weight_decay_is_applied_once():
    # The base optimizer's decoupled decay would subtract lr * wd * w again.
    optimizer = LARS(learning_rate=0.1, momentum=0.0, weight_decay=0.5,
                     exclude_from_adaptation=[])
    w = keras.Variable(np.full((2, 2), 2.0, np.float32))
    optimizer.apply([keras.ops.zeros((2, 2))], [w])
    # Zero gradient: local_lr = 1, update = 0.1 * 0.5 * 2.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), 1.9, rtol=RTOL)


def test_zero_weights_use_local_lr_one():
    zeros = np.zeros((3, 4), np.float32)
    optimizer = LARS(learning_rate=0.5, momentum=0.9, weight_decay=1e-2,
                     trust_coefficient=0.01)
    actual = run(optimizer, [zeros], [[g] for g in GRADS])
    expected = lars_reference(zeros, GRADS, [0.5] * 4, momentum=0.9,
                              weight_decay=1e-2, trust_coefficient=0.01)
    # Step 1 is plain momentum SGD (local_lr = 1), then w != 0 adapts.
    np.testing.assert_allclose(actual[0][0], -0.5 * GRADS[0], rtol=RTOL)
    assert_trajectory([a[0] for a in actual], expected)


def test_zero_gradients_give_no_nan():
    grads = [np.zeros((3, 4), np.float32), GRADS[0],
             np.zeros((3, 4), np.float32)]
    optimizer = LARS(learning_rate=0.5, momentum=0.9, weight_decay=1e-2,
                     trust_coefficient=0.01)
    actual = run(optimizer, [W0], [[g] for g in grads])
    expected = lars_reference(W0, grads, [0.5] * 3, momentum=0.9,
                              weight_decay=1e-2, trust_coefficient=0.01)
    assert_trajectory([a[0] for a in actual], expected)


def test_zero_weights_and_gradients_with_zero_epsilon():
    optimizer = LARS(learning_rate=0.5, epsilon=0.0)
    zeros = np.zeros((2, 2), np.float32)
    actual = run(optimizer, [zeros], [[zeros], [zeros]])
    np.testing.assert_array_equal(actual[-1][0], zeros)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(optimizer.velocities[0]), zeros
    )


def test_learning_rate_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.5, decay_steps=1, decay_rate=0.5
    )
    optimizer = LARS(learning_rate=schedule, momentum=0.9,
                     trust_coefficient=0.01)
    actual = run(optimizer, [W0], [[g] for g in GRADS])
    expected = lars_reference(W0, GRADS, [0.5, 0.25, 0.125, 0.0625],
                              momentum=0.9, trust_coefficient=0.01)
    assert_trajectory([a[0] for a in actual], expected)


def test_sparse_gradient_matches_dense():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("IndexedSlices are a TensorFlow type")
    # Row 1 is gathered twice: the dense gradient sums the two slices.
    values = RNG.normal(size=(3, 4)).astype(np.float32)
    sparse = tf.IndexedSlices(values, tf.constant([1, 2, 1]),
                              tf.constant([3, 4]))
    dense = np.zeros((3, 4), np.float32)
    np.add.at(dense, [1, 2, 1], values)
    optimizer = LARS(learning_rate=0.5, trust_coefficient=0.01)
    w = keras.Variable(W0)
    optimizer.apply([sparse], [w])
    expected = lars_reference(W0, [dense], [0.5], trust_coefficient=0.01)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), expected[0],
                               rtol=RTOL, atol=ATOL)


# -- exclusions --------------------------------------------------------------
BIAS0 = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
BIAS_GRADS = [RNG.normal(scale=0.1, size=(4,)).astype(np.float32)
              for _ in range(4)]
HYPER = dict(momentum=0.9, weight_decay=0.05, trust_coefficient=0.01)


def _two_variables(optimizer, names=("kernel", "bias"), w0s=(W0, BIAS0)):
    second = BIAS_GRADS if w0s[1] is BIAS0 else GRADS
    grads = [[g, s] for g, s in zip(GRADS, second)]
    actual = run(optimizer, list(w0s), grads, names=list(names))
    return [a[0] for a in actual], [a[1] for a in actual], second


def test_default_excludes_1d_variables_from_both():
    kernel, bias, _ = _two_variables(LARS(learning_rate=0.5, **HYPER))
    assert_trajectory(kernel, lars_reference(W0, GRADS, [0.5] * 4, **HYPER))
    assert_trajectory(bias, lars_reference(
        BIAS0, BIAS_GRADS, [0.5] * 4, adapt=False, decay=False, **HYPER))


def test_empty_exclusion_lists_adapt_and_decay_everything():
    optimizer = LARS(learning_rate=0.5, exclude_from_adaptation=[],
                     exclude_from_weight_decay=[], **HYPER)
    _, bias, _ = _two_variables(optimizer)
    assert_trajectory(bias, lars_reference(BIAS0, BIAS_GRADS, [0.5] * 4,
                                           **HYPER))


def test_adaptation_and_decay_excluded_separately():
    optimizer = LARS(learning_rate=0.5, exclude_from_adaptation=["bias"],
                     exclude_from_weight_decay=[], **HYPER)
    _, bias, _ = _two_variables(optimizer)
    assert_trajectory(bias, lars_reference(
        BIAS0, BIAS_GRADS, [0.5] * 4, adapt=False, decay=True, **HYPER))
    optimizer = LARS(learning_rate=0.5, exclude_from_adaptation=[],
                     exclude_from_weight_decay=["bias"], **HYPER)
    _, bias, _ = _two_variables(optimizer)
    assert_trajectory(bias, lars_reference(
        BIAS0, BIAS_GRADS, [0.5] * 4, adapt=True, decay=False, **HYPER))


@pytest.mark.parametrize(
    "exclusion",
    [["special"], [r"^sp\w+_kernel$"], "special",
     lambda v: v.name.startswith("special")],
    ids=["substring", "regex", "single_string", "callable"],
)
def test_exclusion_by_name_regex_and_callable(exclusion):
    optimizer = LARS(learning_rate=0.5, exclude_from_adaptation=exclusion,
                     exclude_from_weight_decay=exclusion, **HYPER)
    kernel, special, grads = _two_variables(
        optimizer, names=("kernel", "special_kernel"), w0s=(W0, W0 * 2.0)
    )
    assert_trajectory(kernel, lars_reference(W0, GRADS, [0.5] * 4, **HYPER))
    assert_trajectory(special, lars_reference(
        W0 * 2.0, grads, [0.5] * 4, adapt=False, decay=False, **HYPER))


def test_base_exclude_from_weight_decay_method_is_honoured():
    optimizer = LARS(learning_rate=0.5, exclude_from_weight_decay=[],
                     exclude_from_adaptation=[], **HYPER)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    _, bias, _ = _two_variables(optimizer)
    assert_trajectory(bias, lars_reference(
        BIAS0, BIAS_GRADS, [0.5] * 4, adapt=True, decay=False, **HYPER))


def test_callable_must_return_bool():
    optimizer = LARS(exclude_from_adaptation=lambda v: "yes")
    with pytest.raises(TypeError, match="must return a bool"):
        optimizer.build([keras.Variable(W0)])


# -- integration with the package LR mechanism and mixed precision -----------
def test_controlled_learning_rate_halves_next_update():
    optimizer = LARS(learning_rate=0.5, momentum=0.9, trust_coefficient=0.01)
    controlled = ControlledLearningRate.install(optimizer)
    w = keras.Variable(W0)
    trajectory = []
    for step, g in enumerate(GRADS[:3]):
        if step == 1:
            controlled.set_factor("x", 0.5)
        optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
        trajectory.append(keras.ops.convert_to_numpy(w))
    expected = lars_reference(W0, GRADS[:3], [0.5, 0.25, 0.25],
                              momentum=0.9, trust_coefficient=0.01)
    assert_trajectory(trajectory, expected)


def test_first_update_is_exactly_halved_by_factor():
    # The first velocity is the whole update (w1 = w0 - velocity); comparing
    # velocities avoids the float32 rounding of w1 - w0.
    updates = []
    for factor in (1.0, 0.5):
        optimizer = LARS(learning_rate=0.5, trust_coefficient=0.01)
        ControlledLearningRate.install(optimizer).set_factor("x", factor)
        run(optimizer, [W0], [[GRADS[0]]])
        updates.append(keras.ops.convert_to_numpy(optimizer.velocities[0]))
    np.testing.assert_allclose(updates[1], 0.5 * updates[0], rtol=1e-6)
    np.testing.assert_allclose(
        updates[0],
        W0 - lars_reference(W0, GRADS[:1], [0.5], trust_coefficient=0.01)[0],
        rtol=1e-4,
    )


@pytest.mark.tensorflow_backend
def test_inside_loss_scale_optimizer():
    scale = 2.0 ** 10
    optimizer = keras.optimizers.LossScaleOptimizer(
        LARS(learning_rate=0.5, momentum=0.9, trust_coefficient=0.01),
        initial_scale=scale,
    )
    controlled = ControlledLearningRate.install(optimizer)
    assert controlled.owner is optimizer.inner_optimizer
    controlled.set_factor("x", 0.5)
    actual = run(optimizer, [W0], [[g * scale] for g in GRADS])
    expected = lars_reference(W0, GRADS, [0.25] * 4, momentum=0.9,
                              trust_coefficient=0.01)
    assert_trajectory([a[0] for a in actual], expected)


# -- errors ------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(trust_coefficient=0.0), ValueError,
         r"`trust_coefficient` must be a finite number > 0. Received: trust_coefficient=0.0"),
        (dict(trust_coefficient=-1e-3), ValueError, "trust_coefficient=-0.001"),
        (dict(momentum=1.0), ValueError,
         r"`momentum` must be a finite number in \[0, 1\). Received: momentum=1.0"),
        (dict(momentum=-0.1), ValueError, "momentum=-0.1"),
        (dict(weight_decay=-1e-4), ValueError,
         r"`weight_decay` must be a finite number >= 0. Received: weight_decay=-0.0001"),
        (dict(epsilon=-1.0), ValueError, "epsilon=-1.0"),
        (dict(momentum="0.9"), ValueError, "must be a finite number"),
        (dict(weight_decay=float("nan")), ValueError, "must be a finite number"),
        (dict(learning_rate=-0.1), ValueError, "Received: learning_rate=-0.1"),
        (dict(learning_rate=float("nan")), ValueError, "Received: learning_rate=nan"),
        (dict(learning_rate=float("inf")), ValueError, "Received: learning_rate=inf"),
        (dict(nesterov=1), ValueError, "`nesterov` must be True or False"),
        (dict(exclude_from_adaptation=3), ValueError,
         "`exclude_from_adaptation` must be None"),
        (dict(exclude_from_weight_decay=["("]), ValueError,
         "invalid regular expression"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        LARS(**kwargs)


# -- serialisation -----------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_lrphase_tests")
def _is_special(variable):
    return variable.name.startswith("special")


def test_config_round_trip():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.9)
    optimizer = LARS(learning_rate=schedule, momentum=0.8, weight_decay=1e-4,
                     trust_coefficient=0.02, epsilon=1e-6, nesterov=True,
                     exclude_from_adaptation=["bn", "bias"],
                     exclude_from_weight_decay=_is_special, clipnorm=1.0,
                     name="lars_test")
    config = optimizer.get_config()
    assert config["momentum"] == 0.8
    assert config["weight_decay"] == 1e-4
    assert config["exclude_from_adaptation"] == ["bn", "bias"]
    restored = LARS.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert isinstance(keras_compat.current_learning_rate_object(restored),
                      keras.optimizers.schedules.ExponentialDecay)
    assert restored._decay_exclusion is _is_special
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(optimizer)
    )
    assert type(again) is LARS and again.get_config() == config


def test_unregistered_callable_is_not_serialisable():
    optimizer = LARS(exclude_from_adaptation=lambda v: False)
    with pytest.raises(ValueError, match="not registered"):
        optimizer.get_config()


def _model():
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.Dense(2),
    ])
    model.set_weights([
        np.asarray(RNG.normal(size=w.shape), np.float32)
        for w in model.get_weights()
    ])
    return model


def test_save_and_load_compiled_model_restores_state(tmp_path):
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 2)).astype(np.float32)
    model = _model()
    model.compile(optimizer=LARS(learning_rate=0.2, weight_decay=1e-3,
                                 trust_coefficient=0.02, nesterov=True),
                  loss="mse")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    path = str(tmp_path / "lars.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is LARS
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    assert any(np.any(keras.ops.convert_to_numpy(v) != 0)
               for v in loaded.optimizer.velocities)
    # The next step continues the same trajectory.
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- JAX backend ---------------------------------------------------------------
JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, keras, numpy as np
    from keras_lrphase.optimizers.lars import LARS
    from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
    data = json.loads(sys.stdin.read())
    w0 = np.asarray(data["w0"], np.float32)
    grads = [np.asarray(g, np.float32) for g in data["grads"]]
    out = {}
    for key, opt in [
        ("lars", LARS(0.5, momentum=0.9, weight_decay=0.05,
                      trust_coefficient=0.01, nesterov=True)),
        ("wrapper", LARSWrapper(keras.optimizers.SGD(0.5, momentum=0.9),
                                trust_coefficient=0.01, epsilon=0.0)),
    ]:
        w = keras.Variable(w0)
        opt.build([w])
        step = jax.jit(opt.stateless_apply)
        opt_values = [v.value for v in opt.variables]
        values, trajectory = [w.value], []
        for g in grads:
            values, opt_values = step(opt_values, [g], values)
            trajectory.append(np.asarray(values[0]).tolist())
        out[key] = trajectory
    print(json.dumps({"backend": keras.backend.backend(), **out}))
""")


@pytest.mark.jax
def test_jax_backend_trajectory():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    data = {"w0": W0.tolist(), "grads": [g.tolist() for g in GRADS[:3]]}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], input=json.dumps(data),
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    assert_trajectory(
        [np.asarray(w) for w in out["lars"]],
        lars_reference(W0, GRADS[:3], [0.5] * 3, momentum=0.9,
                       weight_decay=0.05, trust_coefficient=0.01,
                       nesterov=True),
    )
    # LARSWrapper(SGD) is LARS without weight decay.
    assert_trajectory(
        [np.asarray(w) for w in out["wrapper"]],
        lars_reference(W0, GRADS[:3], [0.5] * 3, momentum=0.9,
                       trust_coefficient=0.01),
    )
