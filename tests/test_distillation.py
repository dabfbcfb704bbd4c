"""The package's callbacks and optimizers on a `keras.distillation.Distiller`.

The Hessian eigenvalue of a Distiller is that of the student's output
layer under the distillation objective; it is checked against the closed
form of that Hessian. The learning rates are checked against the
controllers' traces, the optimizers against the same student trained alone
on the same objective, and `keras-lrphase train --teacher` end to end. The
`jax` test runs the first tests again with KERAS_BACKEND=jax.
"""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from hessian_references import augmented
from hessian_references import softmax
from hessian_references import top_eigenvalue
from keras_lrphase import AutoDecay
from keras_lrphase import FreezeLayers
from keras_lrphase import GradualWarmup
from keras_lrphase import HessianMonitor
from keras_lrphase import LARS
from keras_lrphase import LARSWrapper
from keras_lrphase import TwoPhaseLR
from keras_lrphase import top_hessian_eigenvalue
from keras_lrphase.cli import main
from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.training import runner
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.run_config import RunConfig
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import warmup_ramp
from test_auto_decay_controller import TRACE_B
from test_auto_decay_controller import TRACE_B_LOSSES

Distiller = keras.distillation.Distiller
F32 = np.float32
X = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
Y = np.arange(12) % 3
SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def network(name, seed):
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.LayerNormalization(name=f"{name}_norm"),
        keras.layers.Dense(5, activation="tanh", name=f"{name}_fc",
                           kernel_initializer=init(seed)),
        keras.layers.Dense(3, name=f"{name}_logits",
                           kernel_initializer=init(seed + 1),
                           bias_initializer=keras.initializers.RandomNormal(
                               stddev=0.5, seed=seed + 2)),
    ], name=name)


def distiller(alpha=0.3, temperature=2.0, optimizer=None, features=False):
    losses = [keras.distillation.LogitsDistillation(
        temperature=temperature, loss=keras.losses.KLDivergence())]
    weights = None
    if features:
        losses.append(keras.distillation.FeatureDistillation(
            "mse", teacher_layer_name="teacher_fc", student_layer_name="student_fc"))
        weights = [0.7, 0.5]
    model = Distiller(network("teacher", 10), network("student", 20), losses,
                      distillation_loss_weights=weights, student_loss_weight=alpha)
    model.compile(optimizer or keras.optimizers.SGD(0.1), SCCE)
    model.build((None, 4))
    return model


def fit(model, callbacks, epochs, batch_size=4, x=X, y=Y):
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks)


def values(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


def objective_eigenvalue(model, x, alpha, temperature, logits_weight=1.0):
    """Closed form: the Hessian of the objective in the student's logits layer.

    With z = h W + b, the Hessian in z of the mean cross-entropy is
    diag(p) - p p^T, p = softmax(z), and that of T^2 KL(softmax(t/T) ||
    softmax(z/T)) is diag(q) - q q^T, q = softmax(z/T), whatever the
    teacher's t; in (W, b) each sample adds S_n kron a_n a_n^T, a_n = [h_n; 1].
    """
    student = model.student
    hidden = keras.Model(student.inputs, student.get_layer("student_fc").output)
    h = np.asarray(hidden.predict(x, verbose=0), np.float64)
    kernel, bias = values(student.get_layer("student_logits").weights)
    z = h @ kernel.astype(np.float64) + bias.astype(np.float64)
    p, q = softmax(z), softmax(z / temperature)
    a = augmented(h)
    hessian = 0.0
    for i in range(len(x)):
        curvature = (alpha * (np.diag(p[i]) - np.outer(p[i], p[i]))
                     + (1 - alpha) * logits_weight
                     * (np.diag(q[i]) - np.outer(q[i], q[i])))
        hessian = hessian + np.kron(curvature, np.outer(a[i], a[i]))
    return top_eigenvalue(hessian / len(x))


def exact(model, **kwargs):
    return top_hessian_eigenvalue(model, X, Y, method="lanczos", seed=0,
                                  tolerance=1e-7, max_iterations=18, **kwargs)


# -- the Hessian ------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_eigenvalue_is_the_distillation_objectives(alpha):
    model = distiller(alpha=alpha, temperature=2.0)
    result = exact(model)
    assert result.layer == "student_logits" and result.restricted
    np.testing.assert_allclose(
        result.value, objective_eigenvalue(model, X, alpha, 2.0), rtol=1e-5)


def test_repeated_estimates_follow_a_changed_student_loss_weight():
    # The compiled products are kept per model: changing the Distiller's
    # objective (its student_loss_weight) must give the new objective's
    # eigenvalue, not the first one's.
    model = distiller(alpha=0.3, temperature=2.0)
    first = exact(model).value
    model.student_loss_weight = 1.0
    np.testing.assert_allclose(
        exact(model).value, objective_eigenvalue(model, X, 1.0, 2.0), rtol=1e-5)
    assert exact(model).value != first


def test_hard_label_loss_on_request_and_a_feature_term_before_the_layer():
    # A FeatureDistillation on student_fc is constant in the logits layer's
    # weights: no curvature there.
    model = distiller(alpha=0.4, temperature=3.0, features=True)
    np.testing.assert_allclose(
        exact(model).value,
        objective_eigenvalue(model, X, 0.4, 3.0, logits_weight=0.7), rtol=1e-5)
    # loss=: the student's Hessian under that loss on the labels alone.
    np.testing.assert_allclose(
        exact(model, loss=SCCE).value,
        objective_eigenvalue(model, X, 1.0, 3.0), rtol=1e-5)
    with pytest.raises(ValueError, match="compares the student layer 'student_fc'"):
        exact(model, layer="student_fc")


def test_two_phase_lr_on_a_distiller_follows_the_controllers_trace():
    from scripted_training import TRACE_A
    from scripted_training import TRACE_A_LOSSES

    model = distiller(alpha=0.3, temperature=2.0)
    references = {}
    reference = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: (
        references.__setitem__(e, objective_eigenvalue(model, X, 0.3, 2.0))))
    callback = TwoPhaseLR((X, Y), plateau_patience=TRACE_A["plateau_patience"],
                          eigen_kwargs={"method": "lanczos", "tolerance": 1e-7,
                                        "max_iterations": 18})
    history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback, reference],
                  TRACE_A["epochs"]).history
    eigenvalues = history["hessian_max_eigenvalue"]
    switch = TRACE_A["switch_epoch"]
    assert np.all(np.isnan(eigenvalues[:switch]))
    np.testing.assert_allclose(
        eigenvalues[switch:],
        [references[e] for e in range(switch, TRACE_A["epochs"])], rtol=1e-5)
    # The controller fed the same losses and eigenvalues decides alike.
    replay = TwoPhaseController(TRACE_A["epochs"],
                                plateau_patience=TRACE_A["plateau_patience"])
    factor, expected = 1.0, []
    for epoch, loss in enumerate(TRACE_A_LOSSES):
        expected.append(float(F32(0.1 * factor)))
        factor *= replay.decide(epoch, {"loss": loss,
                                        "hessian_max_eigenvalue": eigenvalues[epoch]}).factor
    assert replay.switch_epoch == switch
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-7)
    assert callback.controller.decay_epochs == replay.decay_epochs


def test_hessian_monitor_logs_the_students_eigenvalue_and_refuses_teacher_layers():
    model = distiller(alpha=0.5, temperature=4.0)
    references = []
    reference = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: (
        references.append(objective_eigenvalue(model, X, 0.5, 4.0))))
    monitor = HessianMonitor((X, Y), method="lanczos", tolerance=1e-7,
                             max_iterations=18)
    history = fit(model, [monitor, reference], 2).history
    np.testing.assert_allclose(history["hessian_max_eigenvalue"], references,
                               rtol=1e-5)
    fresh = distiller()
    with pytest.raises(ValueError, match="layer of the teacher.*'teacher_logits'"):
        fit(fresh, [HessianMonitor((X, Y), layer="teacher_logits")], 1)
    assert int(fresh.optimizer.iterations) == 0  # refused before any step


# -- learning rates ---------------------------------------------------------------
def test_gradual_warmup_ramp_on_a_distiller():
    model = distiller(optimizer=keras.optimizers.SGD(0.2))
    steps = StepLearningRates()
    fit(model, [GradualWarmup(2), steps], 3)  # 3 steps per epoch
    assert steps.rates == warmup_ramp(0.2, 9, 6, 1 / 6, [1.0] * 9)


@pytest.mark.filterwarnings("ignore:AutoDecayController. non-finite loss")
def test_auto_decay_on_a_distiller():
    model = distiller(optimizer=keras.optimizers.SGD(0.1))
    history = fit(model, [ScriptedLoss(TRACE_B_LOSSES), AutoDecay(**TRACE_B)],
                  20).history
    # Decay at the end of epoch 5, stop at the end of epoch 7.
    assert history["learning_rate"] == (
        [float(F32(0.1))] * 6 + [float(F32(float(F32(0.1)) * 0.1))] * 2)


# -- FreezeLayers -----------------------------------------------------------------
def test_freeze_layers_finds_the_students_dense_stack():
    model = distiller(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    student, teacher = model.student, model.teacher
    stack = [student.get_layer("student_fc"), student.get_layer("student_logits")]
    frozen_start = values(v for layer in stack for v in layer.trainable_variables)
    teacher_start = values(teacher.weights)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        values(v for layer in stack for v in layer.trainable_variables)))
    freeze = FreezeLayers(2)
    history = fit(model, [freeze, record], 3).history
    assert freeze.frozen_layers == stack
    assert history["frozen_layers"] == [2, 2, 0]
    for epoch in (0, 1):
        assert all(np.array_equal(a, b) for a, b in zip(seen[epoch], frozen_start))
    assert not np.array_equal(seen[2][0], frozen_start[0])
    assert not np.array_equal(values(student.get_layer("student_norm").weights)[0],
                              np.ones(4, "float32"))
    assert all(np.array_equal(a, b) for a, b in zip(values(teacher.weights),
                                                    teacher_start))
    # Names and patterns match the student's layers only.
    pattern = FreezeLayers(1, "*_fc")
    pattern.set_model(model)
    assert pattern._select_layers() == [stack[0]]


@pytest.mark.parametrize("layers", ["teacher_*", "teacher_fc", "teacher"])
def test_freeze_layers_refuses_the_teacher_before_the_first_step(layers):
    model = distiller()
    if layers == "teacher_fc":
        layers = model.teacher.get_layer("teacher_fc")
    with pytest.raises(ValueError, match="teacher of Distiller 'distiller'"):
        fit(model, [FreezeLayers(1, layers)], 1)
    assert int(model.optimizer.iterations) == 0


# -- optimizers -------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: LARS(0.5, momentum=0.9, trust_coefficient=0.01),
    lambda: LARSWrapper(keras.optimizers.SGD(0.5, momentum=0.9), 0.01),
], ids=["LARS", "LARSWrapper"])
def test_lars_on_a_distiller_trains_as_on_the_objective(make):
    alpha, temperature = 0.3, 2.0
    model = distiller(alpha, temperature, optimizer=make())
    student = model.student
    alone = network("student", 20)
    alone.set_weights(student.get_weights())
    teacher_logits = model.teacher.predict(X, verbose=0)

    def objective(packed, logits):  # labels and the teacher's logits in y
        labels = ops.cast(packed[:, 0], "int32")
        teacher = packed[:, 1:]
        hard = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        soft = keras.losses.kl_divergence(
            ops.softmax(teacher / temperature), ops.softmax(logits / temperature))
        return alpha * hard + (1 - alpha) * temperature ** 2 * soft

    alone.compile(make(), objective)
    fit(model, [], 2)
    fit(alone, [], 2, y=np.concatenate([Y[:, None], teacher_logits], axis=1))
    for got, want in zip(student.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


# -- the command line -------------------------------------------------------------
@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    from keras_lrphase.models import get_model

    folder = tmp_path_factory.mktemp("teachers")
    keras.utils.set_random_seed(1)
    get_model("small-cnn", (8, 8, 1), 10).save(folder / "teacher.keras")
    get_model("small-cnn", (8, 8, 1), 3).save(folder / "three.keras")
    softmax_net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                    keras.layers.Dense(10, activation="softmax")])
    softmax_net.save(folder / "softmax.keras")
    (folder / "broken.keras").write_text("not a model")
    return folder


@pytest.mark.parametrize("extra,message", [
    (["--distill-alpha", "0.5"],
     "Argument --distill-alpha is only used with --teacher. Received: --distill-alpha=0.5"),
    (["--temperature", "3"], "--temperature is only used with --teacher"),
    (["--teacher", "{}/missing.keras"], "Argument --teacher must be an existing model "
     "file (.keras). Received: --teacher='{}/missing.keras'"),
    (["--teacher", "{}/teacher.keras", "--distill-alpha", "1.5"],
     "Argument --distill-alpha must be in [0, 1]. Received: --distill-alpha=1.5"),
    (["--teacher", "{}/teacher.keras", "--temperature", "0"],
     "Argument --temperature must be a positive number. Received: --temperature=0.0"),
    (["--teacher", "{}/three.keras"], "Argument --teacher must output 10 logits per "
     "example (the dataset's classes); its output shape is (3,)"),
    (["--teacher", "{}/softmax.keras"], "must output logits; its last layer"),
    (["--teacher", "{}/broken.keras"], "--teacher could not be loaded as a Keras model"),
])
def test_bad_distillation_flags_fail_before_training(teachers, tmp_path, capsys,
                                                     extra, message):
    extra = [e.format(teachers) for e in extra]
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--train-size", "200", "--out", str(out),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(teachers) in err
    assert not out.exists()


def _config(teacher, **overrides):
    values = dict(dataset="digits", epochs=2, batch_size=64, train_size=128,
                  test_size=100, schedule="two-phase", plateau_patience=1,
                  warmup_epochs=1, lr=0.2, pipeline="numpy", augment="crop",
                  hessian_batch_size=64, teacher=teacher)
    values.update(overrides)
    return RunConfig(**values)


def _rows(folder):
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
            "phase", "hessian_max_eigenvalue")
    return [{k: r[k] for k in keys}
            for r in EpochRecorder.read(os.path.join(folder, "history.csv"))]


def test_train_with_a_teacher_records_it(teachers, tmp_path, capsys):
    path = str(teachers / "teacher.keras")
    out = tmp_path / "run"
    assert main(["train", "--teacher", path, "--epochs", "1", "--train-size", "128",
                 "--batch-size", "64", "--hessian-every", "0", "--verbose", "0",
                 "--out", str(out)]) == 0
    with open(out / "summary.json") as f:
        summary = json.load(f)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert summary["teacher"] == {"path": os.path.abspath(path), "sha256": digest,
                                  "parameters": 5274}
    assert summary["config"]["teacher"] == path
    assert summary["config"]["distill_alpha"] == 0.0  # the defaults
    assert summary["config"]["temperature"] == 5.0
    assert summary["model_parameters"] == 5274  # the student's
    assert "distilled from" in capsys.readouterr().out


@pytest.mark.slow
def test_alpha_one_trains_as_without_a_teacher(teachers, tmp_path):
    path = str(teachers / "teacher.keras")
    distilled = runner.run_training(_config(path, distill_alpha=1.0),
                                    str(tmp_path / "alpha1"), verbose=0, log=None)
    plain = runner.run_training(_config(None), str(tmp_path / "plain"),
                                verbose=0, log=None)
    assert distilled["config"]["temperature"] == 5.0
    assert "teacher" not in plain
    # With alpha = 1 the objective is the hard-label loss plus the weight
    # decay: the same training as without a teacher, from the same weights.
    got, want = _rows(str(tmp_path / "alpha1")), _rows(str(tmp_path / "plain"))
    for row_got, row_want in zip(got, want):
        assert row_got["phase"] == row_want["phase"]
        for key in ("loss", "accuracy", "val_accuracy", "learning_rate",
                    "hessian_max_eigenvalue"):
            np.testing.assert_allclose(row_got[key], row_want[key], rtol=1e-5,
                                       err_msg=key)


@pytest.mark.slow
def test_a_stopped_distillation_run_resumes_to_the_uninterrupted_result(
        teachers, tmp_path, monkeypatch):
    config = _config(str(teachers / "teacher.keras"), distill_alpha=0.5,
                     temperature=3.0)
    whole = runner.run_training(config, str(tmp_path / "whole"), verbose=0,
                                log=None, resume=True)
    build = runner.build_callbacks

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    monkeypatch.setattr(runner, "build_callbacks", lambda *a, **k: (
        build(*a, **k)[0] + [Stop()], build(*a, **k)[1]))
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(config, str(tmp_path / "cut"), verbose=0, log=None,
                            resume=True)
    monkeypatch.setattr(runner, "build_callbacks", build)
    with open(tmp_path / "cut" / "backup" / "run.json") as f:
        assert json.load(f)["config"]["teacher_sha256"] == whole["teacher"]["sha256"]
    resumed = runner.run_training(config, str(tmp_path / "cut"), verbose=0,
                                  log=None, resume=True)
    assert _rows(str(tmp_path / "cut")) == _rows(str(tmp_path / "whole"))
    assert resumed["final_val_accuracy"] == whole["final_val_accuracy"]
    assert resumed["teacher"] == whole["teacher"]


# -- JAX ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.jax
def test_on_jax():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3")
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not jax", os.path.join(here, "test_distillation.py"),
         "-k", "objectives and 0.3 or dense_stack or LARSWrapper"],
        capture_output=True, text=True, env=env, timeout=300, cwd=here,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-2000:]
