"""The package on KERAS_BACKEND=torch, against NumPy references.

Each backend runs this file as a script in its own subprocess (the Keras
backend is fixed at import); the tests compare what the scripts print with
dense NumPy Hessians, NumPy optimizer references and the two-phase
algorithm replayed on the logged metrics. The three subprocesses run at
once, started by one module-scoped fixture.

Script usage: `KERAS_BACKEND=<name> python test_torch_backend.py
<inputs.npz> [--all]`; the last line of stdout is one JSON object. Without
`--all` it only computes the Hessian eigenvalues of the inputs' MLP.
"""

import importlib.util
import json
import sys

import keras
import numpy as np
import pytest

from backend_processes import installed_backends
from backend_processes import run_on_backends
from scripted_training import PAPER_RULES

# `backend_neutral`: passes with any Keras backend in the test process and
# without TensorFlow (the subprocesses cover the backends installed).
pytestmark = [pytest.mark.torch, pytest.mark.backend_neutral]

# The MLP whose Hessian every backend estimates: 6 inputs, 5 tanh units,
# 4 logits, softmax cross-entropy on 48 samples.
N, D, HIDDEN, C = 48, 6, 5, 4
# LARS / LARSWrapper: scripted gradients on one (3, 4) kernel.
LR, COEFFICIENT = 0.5, 0.01
# The `fit` run: linear softmax classifier, 16 samples, batch 8 (2 steps
# per epoch), SGD(0.05), GradualWarmup(2) (4 steps from 0.05 / 4),
# TwoPhaseLR(epochs=8, warmup_epochs=2, plateau_patience=1) fed scripted
# losses: plateau at epoch 3 (n = 4, alpha = round(4 / 3) = 1), switch at
# epoch 4; the loss then rises at every epoch, so the LR decays wherever
# the eigenvalue rose too, never twice in a row.
FIT_EPOCHS, FIT_BATCH, FIT_LR = 8, 8, 0.05
FIT_LOSSES = [9.0, 9.0, 1.0, 1.1, 1.0, 1.1, 1.2, 1.3]
# Doctest examples (exact values from the docstrings) run on torch too.
DOCTEST_MODULES = (
    "keras_lrphase.callbacks.auto_decay",
    "keras_lrphase.callbacks.backup_and_restore",
    "keras_lrphase.callbacks.gradual_warmup",
    "keras_lrphase.callbacks.hessian_monitor",
    "keras_lrphase.callbacks.momentum_correction",
    "keras_lrphase.callbacks.stage_checkpoint",
    "keras_lrphase.callbacks.two_phase_lr",
    "keras_lrphase.hessian.estimator",
    "keras_lrphase.optimizers.lars",
    "keras_lrphase.optimizers.lars_wrapper",
    "keras_lrphase.schedules.controlled_learning_rate",
)


# == the script, run in a subprocess per backend ===========================
def _mlp(arrays):
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(HIDDEN, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(C, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.set_weights([arrays[name] for name in ("w0", "b0", "w1", "b1")])
    return model


def _eigenvalues(arrays):
    from keras_lrphase.hessian.estimator import top_hessian_eigenvalue

    model = _mlp(arrays)
    x, labels = arrays["x"], arrays["labels"]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    out = {}
    # Lanczos with more products than the 24 head weights is exact.
    for hvp in ("forward_over_back", "reverse_over_reverse",
                "finite_difference"):
        out[hvp] = top_hessian_eigenvalue(
            model, x, labels, loss=loss, method="lanczos", hvp=hvp,
            max_iterations=30, tolerance=1e-9, seed=0,
        ).value
    out["all"] = top_hessian_eigenvalue(
        model, x, labels, loss=loss, layer="all", method="lanczos",
        max_iterations=70, tolerance=1e-9, seed=0,
    ).value
    return out


def _trajectory(optimizer, w0s, grads_per_step):
    variables = [keras.Variable(np.asarray(w, "float32"), name=f"v{i}")
                 for i, w in enumerate(w0s)]
    out = []
    for grads in grads_per_step:
        optimizer.apply(
            [keras.ops.convert_to_tensor(np.asarray(g, "float32"))
             for g in grads],
            variables,
        )
        out.append([keras.ops.convert_to_numpy(v).tolist() for v in variables])
    return out


def _optimizers(arrays):
    from keras_lrphase.optimizers.lars import LARS
    from keras_lrphase.optimizers.lars_wrapper import LARSWrapper

    w0, bias0 = arrays["opt_w0"], arrays["opt_bias0"]
    grads = list(arrays["opt_grads"])
    one = [[g] for g in grads]
    sgd = keras.optimizers.SGD
    out = {
        "lars_nesterov_decay": _trajectory(
            LARS(LR, momentum=0.9, nesterov=True, weight_decay=0.05,
                 trust_coefficient=COEFFICIENT), [w0], one),
        "lars_no_momentum": _trajectory(
            LARS(LR, momentum=0.0, trust_coefficient=COEFFICIENT,
                 epsilon=1e-3), [w0], one),
        "wrapper_sgd": _trajectory(
            LARSWrapper(sgd(LR, momentum=0.9), trust_coefficient=COEFFICIENT,
                        epsilon=1e-3),
            [w0, bias0], [[g, g[0]] for g in grads]),
        "wrapper_sgd_nesterov": _trajectory(
            LARSWrapper(sgd(LR, momentum=0.9, nesterov=True),
                        trust_coefficient=COEFFICIENT, epsilon=1e-3),
            [w0], one),
        "wrapper_adam": _trajectory(
            LARSWrapper(keras.optimizers.Adam(0.1, epsilon=0.002),
                        trust_coefficient=COEFFICIENT), [w0], one[:1]),
        "wrapper_clip_schedule": _trajectory(
            LARSWrapper(sgd(keras.optimizers.schedules.ExponentialDecay(
                1.0, decay_steps=1, decay_rate=0.5), momentum=0.9),
                trust_coefficient=0.02, clip=True),
            [w0], [[g * 10] for g in grads]),
        "wrapper_in_loss_scale": _trajectory(
            keras.optimizers.LossScaleOptimizer(
                LARSWrapper(sgd(LR, momentum=0.9),
                            trust_coefficient=COEFFICIENT),
                initial_scale=2.0 ** 10),
            [w0], [[g * 2.0 ** 10] for g in grads]),
    }
    inner = sgd(LR, momentum=0.9)
    LARSWrapper(inner, trust_coefficient=COEFFICIENT)
    out["inner_applied_directly"] = _trajectory(inner, [w0], one)

    # The trainer's route: `fit` hands the gradients to `apply`.
    x, y = arrays["reg_x"], arrays["reg_y"]
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
    ])
    model.compile(LARSWrapper(sgd(0.1, momentum=0.9), trust_coefficient=0.02),
                  loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    out["wrapper_fit_kernel"] = model.get_weights()[0].tolist()
    return out


class _StepRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate)))


class _ScriptedLoss(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = FIT_LOSSES[epoch]


def _fit(arrays):
    from keras_lrphase.callbacks import GradualWarmup
    from keras_lrphase.callbacks import HessianMonitor
    from keras_lrphase.callbacks import TwoPhaseLR

    x, labels = arrays["cls_x"], arrays["cls_labels"]
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(C, name="head")])
    model.set_weights([arrays["cls_kernel"], arrays["cls_bias"]])
    model.compile(keras.optimizers.SGD(FIT_LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    eigen = {"method": "lanczos", "max_iterations": 40, "tolerance": 1e-9}
    two_phase = TwoPhaseLR((x, labels), FIT_EPOCHS, warmup_epochs=2,
                           plateau_patience=1, eigen_kwargs=eigen, **PAPER_RULES)
    steps = _StepRates()
    history = model.fit(
        x, labels, batch_size=FIT_BATCH, epochs=FIT_EPOCHS, shuffle=False,
        verbose=0,
        callbacks=[GradualWarmup(2), _ScriptedLoss(), two_phase,
                   HessianMonitor((x, labels), **eigen), steps],
    )
    h = history.history
    return {
        "final": [w.tolist() for w in model.get_weights()],
        "steps": steps.rates,
        "learning_rate": h["learning_rate"],
        "phase": h["lrphase_phase"],
        "eigenvalues": [float(v) for v in h["hessian_max_eigenvalue"]],
        "decay_epochs": list(two_phase.controller.decay_epochs),
        "final_lr": float(model.optimizer.learning_rate),
    }


def _doctests():
    import contextlib
    import doctest
    import importlib
    import io

    out = {}
    for name in DOCTEST_MODULES:
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            failed, attempted = doctest.testmod(
                importlib.import_module(name),
                optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            )
        out[name] = [failed, attempted, report.getvalue()[-2000:]]
    return out


def _main(argv):
    if keras.backend.backend() == "torch":
        # As in a torch-only install (Keras' `set_random_seed` in the
        # docstring examples would otherwise import TensorFlow).
        for name in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            sys.modules.setdefault(name, None)
    arrays = dict(np.load(argv[1]))
    out = {"backend": keras.backend.backend(), "eigen": _eigenvalues(arrays)}
    if "--all" in argv:
        out["optimizers"] = _optimizers(arrays)
        out["fit"] = _fit(arrays)
        out["doctests"] = _doctests()
    out["imports_tensorflow"] = sys.modules.get("tensorflow") is not None
    print(json.dumps(out))


# == references ==============================================================
def _inputs():
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.normal(size=(N, D)),
        "labels": rng.integers(0, C, size=N),
        "w0": rng.normal(scale=0.6, size=(D, HIDDEN)),
        "b0": rng.normal(scale=0.3, size=HIDDEN),
        "w1": rng.normal(scale=0.6, size=(HIDDEN, C)),
        "b1": rng.normal(scale=0.3, size=C),
        "opt_w0": rng.normal(size=(3, 4)),
        "opt_grads": rng.normal(scale=0.1, size=(4, 3, 4)),
        "opt_bias0": np.array([0.5, -1.0, 2.0, 0.0]),
        "reg_x": rng.normal(size=(8, 3)),
        "cls_x": rng.normal(size=(16, 3)),
    }
    arrays["reg_y"] = arrays["reg_x"] @ np.array([[1.0], [-2.0], [0.5]])
    teacher = rng.normal(size=(3, C))
    arrays["cls_labels"] = np.argmax(arrays["cls_x"] @ teacher, axis=1)
    # Confidently wrong logits: training lowers the confidence, so the
    # curvature p (1 - p) and the eigenvalue rise at every epoch.
    arrays["cls_kernel"] = -3.0 * teacher
    arrays["cls_bias"] = np.zeros(C)
    return {k: v.astype("float32") if v.dtype == np.float64 else v
            for k, v in arrays.items()}


def _mlp_gradient(params, x, labels):
    """Gradient of the MLP's mean softmax cross-entropy, in float64."""
    w0, b0, w1, b1 = params
    hidden = np.tanh(x @ w0 + b0)
    logits = hidden @ w1 + b1
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(C)[labels]) / len(x)
    da = (dz @ w1.T) * (1.0 - hidden ** 2)
    return [x.T @ da, da.sum(0), hidden.T @ dz, dz.sum(0)]


def _mlp_dense_hessian(arrays):
    """The full Hessian by central differences of the exact gradient."""
    params = [arrays[k].astype(np.float64) for k in ("w0", "b0", "w1", "b1")]
    x, labels = arrays["x"].astype(np.float64), arrays["labels"]
    shapes = [p.shape for p in params]
    sizes = [p.size for p in params]
    flat = np.concatenate([p.ravel() for p in params])

    def gradient(vector):
        parts = np.split(vector, np.cumsum(sizes)[:-1])
        grads = _mlp_gradient([q.reshape(s) for q, s in zip(parts, shapes)],
                              x, labels)
        return np.concatenate([g.ravel() for g in grads])

    step = 1e-5
    columns = []
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = step
        columns.append((gradient(flat + e) - gradient(flat - e)) / (2 * step))
    hessian = np.stack(columns, axis=1)
    return (hessian + hessian.T) / 2


def _installed(module):
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The script's output per backend; torch with `--all`."""
    if not _installed("torch"):
        pytest.skip("torch is not installed")
    folder = tmp_path_factory.mktemp("backends")
    inputs = folder / "inputs.npz"
    np.savez(inputs, **_inputs())
    return run_on_backends(__file__, [inputs], installed_backends(),
                           timeout=300, extra={"torch": ["--all"]})


@pytest.fixture(scope="module")
def arrays():
    return _inputs()


# == the Hessian engine =======================================================
def test_eigenvalue_on_torch_equals_the_dense_hessian(runs, arrays):
    from hessian_references import softmax
    from hessian_references import softmax_cross_entropy_dense_hessian
    from hessian_references import top_eigenvalue

    eigen = runs["torch"]["eigen"]
    x = arrays["x"].astype(np.float64)
    hidden = np.tanh(x @ arrays["w0"] + arrays["b0"])
    logits = hidden @ arrays["w1"] + arrays["b1"]
    head = top_eigenvalue(
        softmax_cross_entropy_dense_hessian(hidden, softmax(logits)))
    full = top_eigenvalue(_mlp_dense_hessian(arrays))
    assert eigen["forward_over_back"] == pytest.approx(head, rel=1e-5)
    assert eigen["reverse_over_reverse"] == pytest.approx(head, rel=1e-5)
    # Equation 8's float32 finite difference: a step of 3.5e-4 * ||W||.
    assert eigen["finite_difference"] == pytest.approx(head, rel=1e-3)
    assert eigen["all"] == pytest.approx(full, rel=1e-5)
    assert full > head  # the full Hessian is not the head's block


def test_eigenvalue_agrees_across_backends(runs):
    if len(runs) < 2:
        pytest.skip("only one Keras backend is installed")
    torch_eigen = runs["torch"]["eigen"]
    for backend, result in runs.items():
        for key in ("forward_over_back", "reverse_over_reverse", "all"):
            assert result["eigen"][key] == pytest.approx(
                torch_eigen[key], rel=1e-5), (backend, key)
        # Each backend's finite difference is its own float32 rounding.
        assert result["eigen"]["finite_difference"] == pytest.approx(
            torch_eigen["forward_over_back"], rel=1e-3), backend


# == LARS and LARSWrapper ====================================================
def _grads(arrays):
    return [g.astype(np.float64) for g in arrays["opt_grads"]]


def test_lars_on_torch_matches_numpy_reference(runs, arrays):
    from optimizer_trajectories import assert_trajectory
    from test_lars import lars_reference

    out = runs["torch"]["optimizers"]
    w0, grads = arrays["opt_w0"], _grads(arrays)
    assert_trajectory(
        [np.asarray(s[0]) for s in out["lars_nesterov_decay"]],
        lars_reference(w0, grads, [LR] * 4, momentum=0.9, weight_decay=0.05,
                       trust_coefficient=COEFFICIENT, nesterov=True))
    assert_trajectory(
        [np.asarray(s[0]) for s in out["lars_no_momentum"]],
        lars_reference(w0, grads, [LR] * 4, momentum=0.0,
                       trust_coefficient=COEFFICIENT, epsilon=1e-3))


def test_lars_wrapper_on_torch_matches_numpy_reference(runs, arrays):
    from optimizer_trajectories import assert_trajectory
    from test_lars_wrapper import sgd_reference

    out = runs["torch"]["optimizers"]
    w0, bias0, grads = arrays["opt_w0"], arrays["opt_bias0"], _grads(arrays)

    def first(name):
        return [np.asarray(s[0]) for s in out[name]]

    assert_trajectory(first("wrapper_sgd"), sgd_reference(
        w0, grads, [LR] * 4, 0.9, COEFFICIENT, 1e-3))
    # The bias (one dimension) is excluded by default: plain momentum SGD.
    assert_trajectory([np.asarray(s[1]) for s in out["wrapper_sgd"]],
                      sgd_reference(bias0, [g[0] for g in grads], [LR] * 4,
                                    0.9, COEFFICIENT, 1e-3, adapt=False))
    assert_trajectory(first("wrapper_sgd_nesterov"), sgd_reference(
        w0, grads, [LR] * 4, 0.9, COEFFICIENT, 1e-3, nesterov=True))
    assert_trajectory(first("wrapper_clip_schedule"), sgd_reference(
        w0, [g * 10 for g in grads], [1.0, 0.5, 0.25, 0.125], 0.9, 0.02,
        1e-8, clip=True))
    plain = sgd_reference(w0, grads, [LR] * 4, 0.9, COEFFICIENT, 1e-8)
    assert_trajectory(first("wrapper_in_loss_scale"), plain)
    # Wrapping leaves the inner optimizer as it was: alone, it is plain SGD.
    assert_trajectory(first("inner_applied_directly"), sgd_reference(
        w0, grads, [LR] * 4, 0.9, COEFFICIENT, 1e-8, adapt=False))


def test_lars_wrapper_around_adam_on_torch(runs, arrays):
    from optimizer_trajectories import ATOL
    from optimizer_trajectories import RTOL
    from test_lars_wrapper import trust_ratio

    # Keras Adam's first step: lr * g / (|g| + eps / sqrt(1 - beta_2)), on
    # the gradient times the trust ratio.
    w = arrays["opt_w0"].astype(np.float64)
    g = _grads(arrays)[0]
    ratio = trust_ratio(w, g, COEFFICIENT, 1e-8)
    eps_hat = 0.002 / np.sqrt(1.0 - 0.999)
    expected = w - 0.1 * ratio * g / (ratio * np.abs(g) + eps_hat)
    ((actual,),) = runs["torch"]["optimizers"]["wrapper_adam"]
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_lars_wrapper_in_fit_on_torch(runs, arrays):
    from optimizer_trajectories import ATOL
    from optimizer_trajectories import RTOL
    from test_lars_wrapper import trust_ratio

    x = arrays["reg_x"].astype(np.float64)
    y = arrays["reg_y"].astype(np.float64)
    w, velocity = np.ones((3, 1)), np.zeros((3, 1))
    for step in range(4):  # 2 epochs of 2 batches, unshuffled
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        g = 2 * x[batch].T @ (x[batch] @ w - y[batch]) / 4
        velocity = 0.9 * velocity - 0.1 * g * trust_ratio(w, g, 0.02, 1e-8)
        w = w + velocity
    np.testing.assert_allclose(runs["torch"]["optimizers"]["wrapper_fit_kernel"],
                               w, rtol=RTOL, atol=ATOL)


# == callbacks in model.fit ==================================================
def test_two_phase_fit_on_torch_follows_the_algorithm(runs, arrays):
    from hessian_references import softmax
    from hessian_references import softmax_cross_entropy_dense_hessian
    from hessian_references import top_eigenvalue
    from keras_lrphase.controllers import TwoPhaseController
    from scripted_training import warmup_ramp

    out = runs["torch"]["fit"]
    eigenvalues = out["eigenvalues"]
    # The algorithm, replayed on the logged metrics: the factor decided at
    # an epoch's end applies from the next epoch on.
    controller = TwoPhaseController(FIT_EPOCHS, warmup_epochs=2,
                                    plateau_patience=1, **PAPER_RULES)
    factors, factor = [], 1.0
    for epoch in range(FIT_EPOCHS):
        factors.append(factor)
        factor *= controller.step(epoch, FIT_LOSSES[epoch], eigenvalues[epoch])
    assert list(controller.state.decay_epochs) == out["decay_epochs"] == [5, 7]
    assert out["phase"] == [0] * 5 + [1] * 3

    steps_per_epoch = 16 // FIT_BATCH
    expected = warmup_ramp(FIT_LR, FIT_EPOCHS * steps_per_epoch,
                           2 * steps_per_epoch, 1 / (2 * steps_per_epoch),
                           np.repeat(factors, steps_per_epoch))
    np.testing.assert_allclose(out["steps"], expected, rtol=1e-7)
    np.testing.assert_allclose(out["learning_rate"],
                               expected[steps_per_epoch - 1::steps_per_epoch],
                               rtol=1e-7)
    assert out["final_lr"] == pytest.approx(FIT_LR / 4, rel=1e-7)

    # NumPy SGD with those rates; at every epoch end the logged eigenvalue
    # is the dense Hessian's of the weights reached.
    x = arrays["cls_x"].astype(np.float64)
    one_hot = np.eye(C)[arrays["cls_labels"]]
    kernel = arrays["cls_kernel"].astype(np.float64)
    bias = arrays["cls_bias"].astype(np.float64)
    exact = []
    for step, lr in enumerate(expected):
        batch = slice(FIT_BATCH * (step % steps_per_epoch),
                      FIT_BATCH * (step % steps_per_epoch + 1))
        dz = (softmax(x[batch] @ kernel + bias) - one_hot[batch]) / FIT_BATCH
        kernel = kernel - lr * x[batch].T @ dz
        bias = bias - lr * dz.sum(0)
        if step % steps_per_epoch == steps_per_epoch - 1:
            exact.append(top_eigenvalue(softmax_cross_entropy_dense_hessian(
                x, softmax(x @ kernel + bias))))
    np.testing.assert_allclose(out["final"][0], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["final"][1], bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eigenvalues, exact, rtol=1e-5)
    assert np.all(np.diff(exact) > 0)


def test_torch_runs_without_tensorflow(runs):
    assert runs["torch"]["imports_tensorflow"] is False


def test_docstring_examples_run_on_torch(runs):
    for name, (failed, attempted, report) in runs["torch"]["doctests"].items():
        assert attempted > 0, name
        assert failed == 0, f"{name}:\n{report}"


if __name__ == "__main__":
    _main(sys.argv)
