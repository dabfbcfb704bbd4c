"""LR control under tf.distribute.MirroredStrategy (two logical CPUs)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_lrphase as lrp

    LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.1]
    EIGENVALUES = [1.0, 2.0, 3.0, 4.0, 5.0]

    class ScriptedLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = LOSSES[epoch]

    class Result:
        def __init__(self, value):
            self.value, self.vector, self.iterations = value, [np.zeros(2)], 1

    def run(mirrored, name):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 4)).astype("float32")
        y = rng.integers(0, 3, size=64)
        scope = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
                 if mirrored else tf.device("/cpu:0"))
        with scope:
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            optimizer = (keras.optimizers.SGD(0.5, momentum=0.9)
                         if name == "sgd" else lrp.LARS(0.5, momentum=0.9))
            model.compile(optimizer,
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        calls = []

        def estimator(model, x, y, initial_vector=None):
            calls.append(1)
            return Result(EIGENVALUES[len(calls) - 1])

        history = model.fit(
            x, y, batch_size=16, epochs=8, verbose=0, shuffle=False,
            callbacks=[ScriptedLoss(), lrp.GradualWarmup(1),
                       lrp.TwoPhaseLR((x, y), 8, plateau_patience=1,
                                      estimator=estimator,
                                      plateau_rule="paper", decay_rule="paper")])
        return {"lr": history.history["learning_rate"],
                "phase": history.history["lrphase_phase"],
                "weights": [w.tolist() for w in model.get_weights()],
                "optimizer": [keras.ops.convert_to_numpy(v).tolist()
                              for v in model.optimizer.variables]}

    print(json.dumps({f"{placement}-{name}": run(placement == "mirrored", name)
                      for placement in ("mirrored", "single")
                      for name in ("sgd", "lars")}))
    """
)


def test_two_phase_and_warmup_under_mirrored_strategy(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    # Warmup over the 4 steps of epoch 0 (last step: 0.5 * (1/4 + 3/4 * 3/4)),
    # plateau at epoch 2, switch at 3 (epochs 4-7 trained in convergence),
    # decays decided at epochs 4 and 6.
    expected_lr = [0.40625, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    for run in runs.values():
        assert run["lr"] == pytest.approx(expected_lr, rel=1e-6)
        assert run["phase"] == [0, 0, 0, 0, 1, 1, 1, 1]
    # SGD and LARS: the weights and the optimizer state (iterations,
    # momenta) under the strategy equal one device's.
    for name in ("sgd", "lars"):
        mirrored, single = runs[f"mirrored-{name}"], runs[f"single-{name}"]
        for key in ("weights", "optimizer"):
            assert len(mirrored[key]) == len(single[key])
            for a, b in zip(mirrored[key], single[key]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert runs["mirrored-sgd"]["weights"] != runs["mirrored-lars"]["weights"]


ESTIMATOR_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_lrphase as lrp

    LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, size=64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    class ScriptedLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = LOSSES[epoch]

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.5, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    # The eigenvalue, called inside the scope, on the same weights as a
    # single-device model, for every solver and product mode.
    with strategy.scope():
        mirrored = build()
    with tf.device("/cpu:0"):
        single = build()
    single.set_weights(mirrored.get_weights())
    eigenvalues = {}
    for method in ("power", "lanczos"):
        for hvp in ("forward_over_back", "finite_difference",
                    "reverse_over_reverse"):
            kwargs = dict(method=method, hvp=hvp, seed=0, max_iterations=30)
            with strategy.scope():
                inside = lrp.top_hessian_eigenvalue(mirrored, x, y, **kwargs).value
            eigenvalues[f"{method}/{hvp}"] = [
                inside, lrp.top_hessian_eigenvalue(single, x, y, **kwargs).value]

    def run(use_strategy):
        scope = strategy.scope() if use_strategy else tf.device("/cpu:0")
        with scope:
            model = build()
        history = model.fit(
            x, y, batch_size=16, epochs=8, verbose=0, shuffle=False,
            callbacks=[ScriptedLoss(), lrp.GradualWarmup(1),
                       lrp.TwoPhaseLR((x, y), 8, plateau_patience=1,
                                      plateau_rule="paper", decay_rule="paper"),
                       lrp.HessianMonitor((x, y), seed=0)])
        return {"lr": history.history["learning_rate"],
                "phase": history.history["lrphase_phase"],
                "eigenvalue": history.history["hessian_max_eigenvalue"],
                "weights": [w.tolist() for w in model.get_weights()]}

    print(json.dumps({"eigenvalues": eigenvalues, "mirrored": run(True),
                      "single": run(False)}))
    """
)


def test_hessian_eigenvalue_inside_mirrored_strategy_scope(tmp_path):
    """A model built and compiled in `strategy.scope()`, the real estimator."""
    script = tmp_path / "mirrored_hessian.py"
    script.write_text(ESTIMATOR_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(runs["eigenvalues"]) == 6
    for name, (inside, single) in runs["eigenvalues"].items():
        assert inside == pytest.approx(single, rel=1e-5, abs=1e-5), name
    mirrored, single = runs["mirrored"], runs["single"]
    # The switch at epoch 3 (plateau at 2, one extra epoch); the
    # eigenvalue, estimated every epoch, drives the decays after it.
    assert mirrored["phase"] == single["phase"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert mirrored["lr"] == pytest.approx(single["lr"], rel=1e-6)
    assert min(single["lr"]) < 0.5  # at least one decay was decided
    np.testing.assert_allclose(
        mirrored["eigenvalue"], single["eigenvalue"], rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(single["eigenvalue"]))
    for a, b in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
