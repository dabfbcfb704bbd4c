import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase import ControlledLearningRate
from keras_lrphase import GradualWarmup
from keras_lrphase import LARS
from keras_lrphase import MomentumCorrection
from keras_lrphase import TwoPhaseLR
from keras_lrphase.schedules.controlled_learning_rate import last_step_learning_rate
from scripted_training import PAPER_RULES
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import tiny_model

pytestmark = pytest.mark.backend_neutral

F32 = np.float32
HERE = os.path.dirname(os.path.abspath(__file__))


def fit(model, callbacks, epochs, batch_size=4, **kwargs):
    x, y = regression_data()
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


def test_factors_decay_a_float_learning_rate_in_place():
    optimizer = keras.optimizers.SGD(0.1)
    controlled = ControlledLearningRate.install(optimizer)
    assert ControlledLearningRate.install(optimizer) is controlled
    assert controlled.set_factor("a", 0.5) == 0.5
    assert controlled.scale_by("b", 0.2) == 0.2
    assert controlled.set_factor("a", 0.25) == 0.5
    assert controlled.factors == {"a": 0.25, "b": 0.2}
    # The optimizer's own variable holds the product: still a plain float.
    assert isinstance(optimizer._learning_rate, keras.Variable)
    expected = F32(0.1)
    for ratio in (0.5, 0.2, 0.5):  # each in float64, stored as float32
        expected = F32(float(expected) * ratio)
    assert float(optimizer.learning_rate) == float(expected)
    optimizer.learning_rate = 0.3  # Keras' setter, as ReduceLROnPlateau
    assert controlled.scale_by("a", 0.5) == 0.5
    assert float(optimizer.learning_rate) == float(F32(F32(0.3) * F32(0.5)))


def test_min_lr_clamps_decays_and_never_raises_the_rate():
    optimizer = keras.optimizers.SGD(0.1)
    controlled = ControlledLearningRate.install(optimizer)
    applied = controlled.scale_by("c", 0.1, min_lr=0.04)
    assert applied == pytest.approx(0.4, rel=1e-6)
    assert float(optimizer.learning_rate) == float(F32(0.04))
    assert controlled.scale_by("c", 0.1, min_lr=0.04) == 1.0
    optimizer.learning_rate = 0.01  # below the floor: a decay keeps it
    assert controlled.scale_by("c", 0.5, min_lr=0.04) == 1.0
    assert float(optimizer.learning_rate) == float(F32(0.01))
    assert controlled.factor("c") == pytest.approx(0.4, rel=1e-6)


def test_factors_scale_a_schedule_inside_the_train_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    optimizer = keras.optimizers.SGD(schedule)
    controlled = ControlledLearningRate.install(optimizer)
    controlled.set_factor("a", 0.5)
    controlled.set_factor("b", 0.2)
    for step in (0, 7, 30):
        expected = 0.1 * 0.5 ** (step / 10) * 0.5 * 0.2
        assert controlled.value_at(step) == pytest.approx(expected, rel=1e-6)
    assert controlled.version == 2  # installed with the first, one change


def test_warmup_ramp_values():
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(0.8))
    controlled.set_warmup(4, 0.25)
    got = [controlled.value_at(step) for step in range(6)]
    expected = [0.8 * (0.25 + 0.75 * step / 4) for step in range(4)] + [0.8, 0.8]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_version_counts_in_graph_constant_changes_only():
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(0.1))
    controlled.set_factor("a", 0.5)  # the optimizer variable: no version
    assert controlled.version == 0
    controlled.set_warmup(10, 0.1)  # installs the ramp: two changes
    controlled.set_warmup(10, 0.1)
    controlled.set_base(0.2)
    assert controlled.version == 2


def test_reduce_lr_on_plateau_composes_with_two_phase_and_warmup():
    """Keras' ReduceLROnPlateau in the same fit as the package's callbacks."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    steps = StepLearningRates()
    two_phase = TwoPhaseLR(regression_data(), 6, plateau_patience=1,
                           extra_epochs_fraction=0.0,
                           estimator=ScriptedEstimator([1.0, 2.0, 3.0, 4.0, 5.0]), **PAPER_RULES)
    # Rising losses: RLROP (patience 0, min_delta 1) halves at every epoch
    # end after the first; two-phase switches at epoch 1 (alpha = 0) and
    # decays at 2 and 4 (eigenvalue and loss rise, every other epoch).
    plateau = keras.callbacks.ReduceLROnPlateau(
        "loss", factor=0.5, patience=0, min_delta=1.0, min_lr=0.0)
    losses = [1.0, 1.0, 1.1, 1.2, 1.3, 1.4]
    fit(model, [GradualWarmup(1), ScriptedLoss(losses), two_phase, plateau,
                steps], 6)
    assert two_phase.controller.decay_epochs == [2, 4]
    ramp = [0.5, 0.75]  # 2 steps per epoch, 1 warmup epoch from 1/2
    lr, expected = F32(0.1), []
    for epoch in range(6):
        for step in range(2):
            factor = F32(ramp[step]) if epoch == 0 else F32(1.0)
            expected.append(float(lr * factor))
        if epoch in (2, 4):
            lr = F32(lr * F32(0.5))
        if epoch >= 1:
            lr = F32(lr * F32(0.5))
    assert steps.rates == expected
    # After fit: a plain float variable, settable.
    assert isinstance(model.optimizer._learning_rate, keras.Variable)
    assert float(model.optimizer.learning_rate) == float(lr)


def test_the_optimizer_is_as_the_user_left_it_after_fit():
    """LR callbacks, the setter and a later Keras-only fit all work."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    fit(model, [GradualWarmup(1), ScriptedLoss([1.0, 1.0, 1.1, 1.2]),
                TwoPhaseLR(regression_data(), plateau_patience=1,
                           extra_epochs_fraction=0.0,
                           estimator=ScriptedEstimator([1.0, 2.0, 3.0]), **PAPER_RULES)], 4)
    assert float(model.optimizer.learning_rate) == float(F32(0.05))
    model.optimizer.learning_rate = 1e-4
    assert float(model.optimizer.learning_rate) == float(F32(1e-4))
    steps = StepLearningRates()
    scheduler = keras.callbacks.LearningRateScheduler(lambda e, lr: 0.02 * (e + 1))
    fit(model, [scheduler, steps], 2)
    assert steps.rates == [float(F32(0.02))] * 2 + [float(F32(0.04))] * 2


SAVED_MODEL = textwrap.dedent(
    """
    import sys, keras, numpy as np
    model = keras.models.load_model(sys.argv[1])
    print("LOADED", float(model.optimizer.learning_rate),
          type(model.optimizer._learning_rate).__name__,
          "keras_lrphase" in sys.modules)
    """
)


def _load_in_fresh_process(path, tmp_path, preamble=""):
    script = tmp_path / "load.py"
    script.write_text(preamble + SAVED_MODEL)
    return subprocess.run([sys.executable, str(script), str(path)],
                          capture_output=True, text=True, timeout=300)


def test_a_model_saved_after_fit_loads_without_the_package(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
    fit(model, [GradualWarmup(1), ScriptedLoss([1.0, 1.0, 1.1]),
                TwoPhaseLR(regression_data(), plateau_patience=1,
                           extra_epochs_fraction=0.0,
                           estimator=ScriptedEstimator([1.0, 2.0]), **PAPER_RULES)], 3)
    path = tmp_path / "model.keras"
    model.save(path)
    out = _load_in_fresh_process(path, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("LOADED")][0]
    assert line.split()[1:] == [str(float(F32(0.05))), "Variable", "False"]


def test_a_checkpoint_written_during_warmup_names_the_package(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1))
    path = tmp_path / "during.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(path))
    fit(model, [GradualWarmup(2), checkpoint], 1)
    out = _load_in_fresh_process(path, tmp_path)
    assert out.returncode != 0
    assert "ScaledLearningRate" in out.stderr
    assert "keras_lrphase" in out.stderr  # the module to import
    # With the package imported it loads as the plain learning rate.
    out = _load_in_fresh_process(path, tmp_path, "import keras_lrphase\n")
    assert out.returncode == 0, out.stderr[-2000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("LOADED")][0]
    assert line.split()[1:] == [str(float(F32(0.1))), "Variable", "True"]


def test_installs_through_loss_scale_optimizer():
    inner = keras.optimizers.SGD(0.1)
    outer = keras.optimizers.LossScaleOptimizer(inner)
    controlled = ControlledLearningRate.install(outer)
    assert controlled.owner is inner
    controlled.set_factor("x", 0.5)
    assert float(outer.learning_rate) == pytest.approx(0.05)


def test_last_step_learning_rate_reads_every_kind():
    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.4, 0.2]))
    assert last_step_learning_rate(optimizer) == pytest.approx(0.4)
    optimizer.iterations.assign(3)
    assert last_step_learning_rate(optimizer) == pytest.approx(0.2)
    assert last_step_learning_rate(keras.optimizers.SGD(0.25)) == 0.25


def test_momentum_correction_rescales_the_velocity_at_a_decay():
    """Goyal et al.: v <- v * lr_new / lr_old when the LR changes."""
    x, y = regression_data()

    def run(correct):
        model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
        two_phase = TwoPhaseLR(
            (x, y), 4, plateau_patience=1, extra_epochs_fraction=0.0,
            estimator=ScriptedEstimator([1.0, 2.0, 3.0]),
            momentum_correction=correct, **PAPER_RULES)
        weights = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, l: weights.append(
                [w.astype("float64") for w in model.get_weights()]))
        fit(model, [ScriptedLoss([1.0, 1.0, 1.1, 1.2]), two_phase, record], 4,
            batch_size=8)
        assert two_phase.controller.decay_epochs == [2]
        return weights

    for correct in (False, True):
        weights = run(correct)
        w = [v.astype("float64") for v in tiny_model(keras.optimizers.SGD()).get_weights()]
        v = [np.zeros_like(p) for p in w]
        for epoch, lr in enumerate([0.1, 0.1, 0.1, 0.05]):
            if correct and epoch == 3:
                v = [m * 0.5 for m in v]
            kernel, bias = w
            residual = x @ kernel + bias - y
            grads = [2 * x.T @ residual / len(x), 2 * residual.mean(axis=0)]
            v = [0.9 * m - lr * g for m, g in zip(v, grads)]
            w = [p + m for p, m in zip(w, v)]
            for got, want in zip(weights[epoch], w):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_momentum_correction_needs_a_velocity_holding_the_rate():
    model = tiny_model(keras.optimizers.Adam(0.1))
    callback = TwoPhaseLR(regression_data(), 4, momentum_correction=True, **PAPER_RULES)
    with pytest.raises(ValueError, match="`momentum_correction` applies to keras.optimizers.SGD.*Adam"):
        fit(model, [callback], 1)



@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.1),
    lambda: LARS(0.1, momentum=0.0),
], ids=["sgd", "lars"])
def test_momentum_correction_needs_momentum(optimizer):
    # Without momentum there is no velocity to rescale: a silent no-op
    # before (Adam was refused, SGD(momentum=0) accepted).
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    for callback, argument in [
        (MomentumCorrection(), "model"),
        (TwoPhaseLR(regression_data(), 4, momentum_correction=True),
         "momentum_correction"),
    ]:
        with pytest.raises(ValueError, match=rf"Argument `{argument}` needs an "
                           r"optimizer with momentum (for MomentumCorrection )?"
                           r"\(its (SGD|LARS) has momentum=0\.0, so it keeps no "
                           r"velocity to rescale\)\. Received: "):
            fit(tiny_model(optimizer()), [record, callback], 2)
    assert begun == []

def test_errors():
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="Received: value=0.0"):
        controlled.set_factor("a", 0.0)
    with pytest.raises(ValueError, match="Received: name=''"):
        controlled.set_factor("", 0.5)
    with pytest.raises(ValueError, match="Received: initial_fraction=1.5"):
        controlled.set_warmup(3, 1.5)
    with pytest.raises(ValueError, match="Received: steps=-1"):
        controlled.set_warmup(-1, 0.5)
    with pytest.raises(ValueError, match="Received: value=-1"):
        controlled.set_base(-1)
    schedule = ControlledLearningRate.install(keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)))
    with pytest.raises(ValueError, match="schedule ExponentialDecay"):
        schedule.set_base(0.2)
    with pytest.raises(ValueError, match="plain callable"):
        ControlledLearningRate.install(keras.optimizers.SGD(lambda: 0.1))
    with pytest.raises(ValueError, match="must be a keras.optimizers.Optimizer"):
        ControlledLearningRate.install("sgd")


JAX_REFRESH = textwrap.dedent(
    """
    import numpy as np, keras
    from keras_lrphase import ControlledLearningRate

    class Halve(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            self.lr = ControlledLearningRate.install(model.optimizer)
            self.traced = []
        def on_epoch_begin(self, epoch, logs=None):
            self.lr.refresh(self.model)
            self.traced.append(self.model.train_function)
        def on_epoch_end(self, epoch, logs=None):
            self.lr.scale_by("h", 0.5)

    x = np.ones((8, 1), "float32"); y = np.zeros((8, 1), "float32")
    for base in (0.1, keras.optimizers.schedules.ExponentialDecay(0.1, 1000, 1.0)):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
            1, use_bias=False, kernel_initializer="ones")])
        model.compile(keras.optimizers.SGD(base), "mse")
        halve = Halve()
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[halve])
        print(keras.backend.backend(), float(model.layers[0].kernel.numpy()[0, 0]),
              len(set(map(id, halve.traced))))
    """
)


@pytest.mark.jax
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_decays_reach_the_compiled_step_on_each_backend(tmp_path, backend):
    pytest.importorskip(backend if backend == "jax" else "tensorflow")
    script = tmp_path / "refresh.py"
    script.write_text(JAX_REFRESH)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND=backend), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [l.split() for l in out.stdout.splitlines()[-2:]]
    for name, weight, traces in lines:
        # w <- w - lr * 2w with lr = 0.1, 0.05, 0.025 in the three epochs.
        assert name == backend
        assert float(weight) == pytest.approx(0.8 * 0.9 * 0.95, rel=1e-6)
    float_traces, schedule_traces = (int(line[2]) for line in lines)
    # A float learning rate is an optimizer variable: never retraced. The
    # first factor on a schedule installs the in-graph scaling (a retrace on
    # every backend); on JAX each later change is a constant of the trace.
    assert float_traces == 1
    assert schedule_traces == (3 if backend == "jax" else 2)


def test_a_learning_rate_replaced_by_the_user_is_the_new_base():
    optimizer = keras.optimizers.SGD(0.1)
    ControlledLearningRate.install(optimizer).set_factor("a", 0.5)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.3, 10, 0.5)
    optimizer.learning_rate = schedule
    controlled = ControlledLearningRate.install(optimizer)
    assert controlled.base is schedule and controlled.factors == {}
    assert controlled.value_at(0) == pytest.approx(0.3)
