"""FreezeLayers: frozen weights and slots bit-identical, exact training after.

The tests run on the backend of the process (TensorFlow by default); the
`jax` test runs two of them again with KERAS_BACKEND=jax: the freeze and
release with SGD, momentum and weight decay, and the resume during the
freeze.
"""

import functools
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase.callbacks import AutoDecay
from keras_lrphase.callbacks import AtomicBackupAndRestore
from keras_lrphase.callbacks import GradualWarmup
from keras_lrphase.callbacks import TwoPhaseLR
from keras_lrphase.callbacks.freeze_layers import FreezeLayers
from keras_lrphase.schedules.controlled_learning_rate import (
    ControlledLearningRate,
)
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
from scripted_training import PAPER_RULES
from scripted_training import Crash
from scripted_training import Interrupted
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import warmup_ramp
from test_auto_decay_controller import TRACE_B
from test_auto_decay_controller import TRACE_B_LOSSES

F32 = np.float32
FROZEN = ("fc1", "fc2")
# 12 samples, batch 3: 4 steps per epoch.
X = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(12, 2)).astype("float32")

OPTIMIZERS = {
    "sgd_momentum_weight_decay": lambda: keras.optimizers.SGD(
        0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda: keras.optimizers.Adam(0.01),
    # 3 micro-steps per update, 4 steps per epoch: the release at step 8
    # falls inside an accumulation cycle (steps 6, 7, 8).
    "lars_accumulation": lambda: LARS(
        0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02,
        gradient_accumulation_steps=3),
    # Mixed precision's wrapper around the package's wrapper.
    "loss_scale_lars_wrapper": lambda: keras.optimizers.LossScaleOptimizer(
        LARSWrapper(keras.optimizers.SGD(0.1, momentum=0.9),
                    trust_coefficient=0.02)),
}


def net(optimizer=None, seed=0):
    """body -> fc1 -> fc2: a 'convolutional' body and an FC stack of two."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(5, activation="tanh", name="body"),
        keras.layers.Dense(3, activation="tanh", name="fc1"),
        keras.layers.Dense(2, name="fc2"),
    ], name="net")
    if optimizer is not None:
        model.compile(optimizer, "mse")
    return model


def fit(model, callbacks, epochs, **kwargs):
    return model.fit(X, Y, batch_size=3, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


def values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def is_frozen(variable):
    return any(f"net/{name}/" in variable.path for name in FROZEN)


def frozen_slots(optimizer):
    """The optimizer variables of the frozen layers' weights."""
    return {v.path: keras.ops.convert_to_numpy(v).copy()
            for v in optimizer.variables
            if any(f"net_{name}_" in v.name for name in FROZEN)}


def reference_weights(make_optimizer, freeze_epochs, epochs):
    """The same training by another route: `trainable=False`, new optimizer.

    The FC layers are made non-trainable for the first epochs (the
    optimizer never sees them), then a new optimizer built on all the
    weights takes over the first one's state (step, slots of the body) and
    the FC slots start at their initial values.
    """
    model = net()
    for name in FROZEN:
        model.get_layer(name).trainable = False
    first = make_optimizer()
    model.compile(first, "mse")
    fit(model, [], freeze_epochs)
    for name in FROZEN:
        model.get_layer(name).trainable = True
    second = make_optimizer()
    second.build(model.trainable_variables)
    state = {v.name: keras.ops.convert_to_numpy(v).copy() for v in first.variables}
    for v in second.variables:
        if v.name in state:
            v.assign(state[v.name])
    model.compile(second, "mse")
    fit(model, [], epochs, initial_epoch=freeze_epochs)
    return values(model.trainable_variables)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_exact_freeze_then_release(optimizer):
    make_optimizer = OPTIMIZERS[optimizer]
    model = net(make_optimizer())
    start = values(model.trainable_variables)
    order = [id(v) for v in model.trainable_variables]
    frozen = [v for v in model.trainable_variables if is_frozen(v)]
    assert len(frozen) == 4
    epochs_seen = []

    def record(epoch, logs):
        epochs_seen.append((
            values(model.trainable_variables),
            frozen_slots(model.optimizer),
            [id(v) for v in model.trainable_variables],
            [model.get_layer(name).trainable for name in FROZEN],
        ))

    freeze = FreezeLayers(2, ["fc*"])
    history = fit(model, [freeze, keras.callbacks.LambdaCallback(on_epoch_end=record)], 4)
    assert [layer.name for layer in freeze.frozen_layers] == ["fc1", "fc2"]
    assert freeze.frozen_variables == frozen
    assert history.history["frozen_layers"] == [2, 2, 0, 0]
    frozen_index = [i for i, v in enumerate(model.trainable_variables) if is_frozen(v)]
    for epoch in (0, 1):
        weights, slots, ids, trainable = epochs_seen[epoch]
        # Bit-identical weights (weight decay included), untouched slots.
        assert all(np.array_equal(weights[i], start[i]) for i in frozen_index)
        assert not np.array_equal(weights[0], start[0])  # the body trains
        assert slots and all(not np.any(s) for s in slots.values())
        # trainable_variables: the same variables, same order; trainable flags kept.
        assert ids == order and trainable == [True, True]
    assert all(not np.array_equal(epochs_seen[3][0][i], start[i]) for i in frozen_index)
    assert [id(v) for v in model.trainable_variables] == order
    assert "apply" not in vars(keras_inner(model.optimizer))
    if optimizer == "loss_scale_lars_wrapper":
        return  # the reference comparison runs for the other three only
    # After the release: exactly the training of a model whose FC layers
    # the optimizer starts to update at epoch 2, with initial slots.
    expected = reference_weights(make_optimizer, 2, 4)
    final = values(model.trainable_variables)
    assert all(np.array_equal(a, b) for a, b in zip(final, expected))


def keras_inner(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def test_numpy_reference_step_and_weight_decay():
    """SGD, momentum 0.9, decoupled weight decay, one batch per epoch."""
    lr, momentum, wd = F32(0.1), F32(0.9), F32(0.05)
    x, y = regression_data()  # 8 samples, 2 features, 1 output
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="body"),
                              keras.layers.Dense(1, name="head")])
    model.compile(keras.optimizers.SGD(float(lr), momentum=float(momentum),
                                       weight_decay=float(wd)), "mse")
    w = values(model.trainable_variables)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: seen.append(values(model.trainable_variables)))
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
              callbacks=[FreezeLayers(1, ["head"]), record])

    def gradients(wb, bb, wh, bh):
        h = x @ wb + bb
        d = F32(2) * (h @ wh + bh - y) / F32(len(x))
        dh = d @ wh.T
        return [x.T @ dh, dh.sum(0), h.T @ d, d.sum(0)]

    # Epoch 0: the body decays and steps; the head is not decayed.
    g = gradients(*w)
    velocity = [-lr * g[0], -lr * g[1]]
    body = [w[i] * (F32(1) - wd * lr) + velocity[i] for i in (0, 1)]
    assert np.array_equal(seen[0][2], w[2]) and np.array_equal(seen[0][3], w[3])
    for i in (0, 1):
        np.testing.assert_allclose(seen[0][i], body[i], rtol=1e-6, atol=1e-7)
    # Epoch 1: the head's first step, from a zero velocity.
    g = gradients(seen[0][0], seen[0][1], w[2], w[3])
    expected = [
        seen[0][0] * (F32(1) - wd * lr) + momentum * velocity[0] - lr * g[0],
        seen[0][1] * (F32(1) - wd * lr) + momentum * velocity[1] - lr * g[1],
        w[2] * (F32(1) - wd * lr) - lr * g[2],
        w[3] * (F32(1) - wd * lr) - lr * g[3],
    ]
    for got, want in zip(seen[1], expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def sgd():
    return keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01)


@functools.cache
def uninterrupted_run():
    model = net(sgd(), seed=7)
    fit(model, [FreezeLayers(2, "fc*")], 4)
    return values(model.trainable_variables)


@pytest.mark.parametrize("crash_epoch, backup", [
    (1, AtomicBackupAndRestore), (3, keras.callbacks.BackupAndRestore)])
def test_resume_during_and_after_the_freeze(tmp_path, crash_epoch, backup):
    folder = str(tmp_path / "backup")

    def run(extra, seed):
        model = net(sgd(), seed=seed)
        fit(model, [FreezeLayers(2, "fc*"), backup(folder)] + extra, 4)
        return values(model.trainable_variables)

    with pytest.raises(Interrupted):
        run([Crash(crash_epoch)], seed=7)
    # Other initial weights: the resumed run has only the checkpoint.
    resumed = run([], seed=8)
    assert not os.path.exists(folder)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted_run()))


def test_composes_with_gradual_warmup_and_two_phase_lr():
    """The LR per step is the controllers' exact trace; the freeze holds."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="body"),
                              keras.layers.Dense(1, name="head")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    head = values(model.get_layer("head").trainable_variables)
    held = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: held.append(
        all(np.array_equal(a, b) for a, b in
            zip(values(model.get_layer("head").trainable_variables), head))))
    steps = StepLearningRates()
    two_phase = TwoPhaseLR(regression_data(), 8, warmup_epochs=2, plateau_patience=1,
                           estimator=ScriptedEstimator([1.0, 2.0, 3.0, 4.0]), **PAPER_RULES)
    x, y = regression_data()
    callbacks = [GradualWarmup(2), ScriptedLoss([9.0, 9.0, 1.0, 1.1, 1.0, 1.1, 1.2, 1.3]),
                 FreezeLayers(3, "head"), two_phase, steps, record]
    model.fit(x, y, batch_size=4, epochs=8, shuffle=False, verbose=0, callbacks=callbacks)
    # The trace of test_two_phase_lr's composition test: decays at 5 and 7.
    assert two_phase.controller.decay_epochs == [5, 7]
    assert steps.rates == warmup_ramp(0.1, 16, 4, 0.25, np.repeat([1.0] * 6 + [0.5] * 2, 2))
    assert held == [True] * 3 + [False] * 5


@pytest.mark.filterwarnings("ignore:AutoDecayController")  # the scripted NaN loss
def test_composes_with_auto_decay():
    """AutoDecay's exact trace of test_auto_decay, with a layer frozen."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="body"),
                              keras.layers.Dense(1, name="head")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    steps = StepLearningRates()
    x, y = regression_data()
    callbacks = [ScriptedLoss(TRACE_B_LOSSES), FreezeLayers(2, "head"),
                 AutoDecay(**TRACE_B), steps]
    history = model.fit(x, y, batch_size=4, epochs=20, shuffle=False, verbose=0,
                        callbacks=callbacks).history
    # Decay at the end of epoch 5, stop at the end of epoch 7.
    lr = [float(F32(0.1))] * 6 + [float(F32(float(F32(0.1)) * 0.1))] * 2
    assert history["learning_rate"] == lr
    assert steps.rates == list(np.repeat(lr, 2))
    assert history["frozen_layers"] == [1, 1] + [0] * 6


def cnn():
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dropout(0.5), keras.layers.Dense(8, name="fc2"),
        keras.layers.Activation("relu"),
        keras.layers.Dense(3, activation="softmax", name="fc3")])


def functional_bn_between():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, name="fc_a")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(3, name="fc_b")(h)
    return keras.Model(inputs, outputs)


def functional_two_heads():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    left = keras.layers.Dense(4, name="left")(h)
    right = keras.layers.Dense(4, name="right")(keras.layers.Dropout(0.1)(h))
    merged = keras.layers.Concatenate()([left, right])
    return keras.Model(inputs, [keras.layers.Dense(2, name="out")(merged),
                                keras.layers.Dense(1, name="aux")(h)])


def selected(model, layers=None):
    """The layers a FreezeLayers selects, as at the start of `fit`."""
    model.compile(keras.optimizers.SGD(0.1), "mse")
    freeze = FreezeLayers(1, layers)
    freeze.set_model(model)
    freeze.on_train_begin()
    freeze.on_train_end()
    assert "apply" not in vars(model.optimizer)
    return [layer.name for layer in freeze.frozen_layers]


@pytest.mark.parametrize("build, expected", [
    (cnn, ["fc1", "fc2", "fc3"]),
    (functional_bn_between, ["fc_b"]),
    (functional_two_heads, ["out", "aux"]),
])
def test_default_is_the_trailing_dense_stack(build, expected):
    assert selected(build()) == expected


def test_names_patterns_and_layer_objects():
    model = cnn()
    assert selected(model, "fc2") == ["fc2"]
    assert selected(model, ["fc[13]", "conv"]) == ["conv", "fc1", "fc3"]
    assert selected(model, [model.get_layer("fc3"), "fc*"]) == ["fc1", "fc2", "fc3"]
    outer = keras.Sequential([keras.Input((4,)), net(), keras.layers.Dense(1, name="top")])
    assert selected(outer, "fc?") == ["fc1", "fc2"]


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", None, np.float32(2)])
def test_bad_epochs(value):
    message = f"Argument `epochs` must be an integer >= 0. Received: epochs={value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        FreezeLayers(value)


@pytest.mark.parametrize("value", [[], [3], 3, "", ["fc1", None], ("fc1", "")])
def test_bad_layers(value):
    with pytest.raises(ValueError, match=r"Argument `layers` must .*Received: layers="):
        FreezeLayers(1, value)


def test_bad_verbose():
    with pytest.raises(ValueError, match=r"Argument `verbose`.*Received: verbose=2"):
        FreezeLayers(1, verbose=2)


class EpochBegun(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise AssertionError("an epoch began")


@pytest.mark.parametrize("layers, message", [
    ("nope", r"Argument `layers` names no layer of model 'net': 'nope' matches "
             r"none of \['body', 'fc1', 'fc2'\]\. Received: layers=\['nope'\]"),
    ("other", r"Argument `layers` contains layer 'fc2', which is not a layer of "
              r"model 'net'\. Received: layers=\[<Dense name=fc2"),
    (["*"], r"layers=\['\*'\] selects layers \['body', 'fc1', 'fc2'\], which hold "
            r"every trainable weight of model 'net'"),
])
def test_selection_errors_before_the_first_epoch(layers, message):
    model = net(keras.optimizers.SGD(0.1))
    if layers == "other":
        layers = [net().get_layer("fc2")]
    start = values(model.trainable_variables)
    with pytest.raises(ValueError, match=message):
        fit(model, [FreezeLayers(1, layers), EpochBegun()], 2)
    assert all(np.array_equal(a, b) for a, b in zip(values(model.trainable_variables), start))
    assert "apply" not in vars(model.optimizer)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("build, message", [
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                               keras.layers.GlobalAveragePooling2D()]),
     "found no trailing Dense layer with trainable weights"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                               keras.layers.Dense(1)], name="mlp"),
     r"the Dense stack found with layers=None selects layers \['dense(_\d+)?', "
     r"'dense(_\d+)?'\], which hold every trainable weight of model 'mlp'"),
    (lambda: Subclassed(), r"finds the Dense stack in the graph of a Sequential "
                           r"or Functional model; model .* \(Subclassed\) has none"),
])
def test_default_selection_errors(build, message):
    model = build()
    if not model.built:
        model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=message):
        selected(model)


def test_logs_verbose_and_a_later_fit_trains_everything(capsys):
    model = net(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.warns(UserWarning, match="not released in this `fit`"):
        history = fit(model, [FreezeLayers(5, "fc*", verbose=1)], 1)  # ends mid-freeze
    assert history.history["frozen_layers"] == [2]
    assert "Epoch 1: FreezeLayers freezes 2 layers (fc1, fc2)." in capsys.readouterr().out
    assert "apply" not in vars(model.optimizer)
    fc2 = values(model.get_layer("fc2").trainable_variables)
    fit(model, [], 1)  # no callback: the FC layers train
    assert not np.array_equal(values(model.get_layer("fc2").trainable_variables)[0], fc2[0])
    history = fit(model, [FreezeLayers(3, "fc*", verbose=1)], 4, initial_epoch=2)
    assert history.history["frozen_layers"] == [2, 0]
    assert "Epoch 4: FreezeLayers releases 2 layers (fc1, fc2)." in capsys.readouterr().out


def test_a_fit_stopped_during_the_freeze_does_not_leak_into_the_next():
    """Keras skips `on_train_end` after an exception; the next fit cleans up."""
    model = net(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(Interrupted), pytest.warns(UserWarning, match="not released"):
        fit(model, [FreezeLayers(5, "fc*"), Crash(1)], 3)
    fc2 = values(model.get_layer("fc2").trainable_variables)
    history = fit(model, [FreezeLayers(1, "fc1")], 3, initial_epoch=2)
    assert history.history["frozen_layers"] == [0]
    assert not np.array_equal(values(model.get_layer("fc2").trainable_variables)[0], fc2[0])
    assert "apply" not in vars(model.optimizer)


def test_the_freeze_is_kept_by_the_optimizers_one_control():
    # One object per optimizer holds every change the package makes to it:
    # the freeze is its `ControlledLearningRate`'s, and outlives a new
    # learning rate given between two `fit` calls.
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    model = net(optimizer)
    freeze = FreezeLayers(2, ["fc*"])
    seen = []

    def record(epoch, logs):
        frozen = ControlledLearningRate.install(optimizer, scaled=False).frozen
        seen.append([v.path for v in frozen.skipped()])

    recorder = keras.callbacks.LambdaCallback(on_epoch_begin=record)
    with pytest.warns(UserWarning, match="not released in this `fit`"):
        fit(model, [freeze, recorder], 1)
    optimizer.learning_rate = 0.05
    fit(model, [freeze, recorder], 3, initial_epoch=1)
    paths = [v.path for v in freeze.frozen_variables]
    assert len(paths) == 4 and all(is_frozen(v) for v in freeze.frozen_variables)
    assert seen == [paths, paths, []]  # epochs 0 and 1 frozen, 2 released
    assert not ControlledLearningRate.install(optimizer).frozen.users


def test_a_callable_learning_rate_is_frozen_too():
    # A plain callable learning rate cannot be scaled by the LR controllers,
    # but the freeze does not scale it: it is accepted.
    model = net(keras.optimizers.SGD(lambda: 0.1))
    start = {v.path: keras.ops.convert_to_numpy(v).copy()
             for v in model.trainable_variables}
    after = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: after.append(
        {v.path: keras.ops.convert_to_numpy(v).copy()
         for v in model.trainable_variables}))
    fit(model, [FreezeLayers(1, ["fc*"]), record], 2)
    for path, value in start.items():
        frozen = any(f"net/{name}/" in path for name in FROZEN)
        assert np.array_equal(after[0][path], value) == frozen, path
        assert not np.array_equal(after[1][path], value), path


@pytest.mark.jax
def test_exactness_and_resume_on_jax():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3")
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not jax", os.path.join(here, "test_freeze_layers.py"),
         "-k", "(exact_freeze and sgd) or (resume and 1-)"],
        capture_output=True, text=True, env=env, timeout=300, cwd=here,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout, result.stdout[-2000:]


def test_a_freeze_as_long_as_the_fit_warns_at_the_start():
    model = net(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.warns(UserWarning) as caught:
        warned_at_epoch_0 = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda e, l: warned_at_epoch_0.append(len(caught)) if e == 0 else None)
        history = fit(model, [record, FreezeLayers(10, "fc*")], 3)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "FreezeLayers: the layers stay frozen for epochs=10 but `fit` runs "
        "epochs=3: they are not released in this `fit` (a later `fit` with "
        "initial_epoch=3 continues the freeze)."]
    assert warned_at_epoch_0 == [1]
    assert history.history["frozen_layers"] == [2, 2, 2]
