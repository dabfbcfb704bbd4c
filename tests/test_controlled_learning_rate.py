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
from keras_lrphase import LARSWrapper
from keras_lrphase import MomentumCorrection
from keras_lrphase import TwoPhaseLR
from keras_lrphase.backend import keras_compat
from keras_lrphase.schedules.controlled_learning_rate import last_step_learning_rate
from keras_lrphase.schedules.scaled_learning_rate import ScaledLearningRate
from scripted_training import PAPER_RULES
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import tiny_model
from keras_lrphase.backend import keras_compat
from scripted_training import warmup_ramp
from scripted_training import warns_no_plateau_by_half_of
from scripted_training import warns_nothing_learned

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
    assert isinstance(keras_compat.current_learning_rate_object(optimizer), keras.Variable)
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
    assert controlled.version == 2  # one change of the in-graph scale each


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
    controlled.set_warmup(10, 0.1)  # the ramp's constants: one change
    controlled.set_warmup(10, 0.1)
    controlled.set_base(0.2)
    assert controlled.version == 1
    assert not controlled.installed  # installed by a fit that needs it


def test_reduce_lr_on_plateau_composes_with_two_phase_and_warmup():
    """Keras' ReduceLROnPlateau in the same fit as the package's callbacks."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    steps = StepLearningRates()
    two_phase = TwoPhaseLR(regression_data(), 6, plateau_patience=1,
                           extra_epochs_fraction=0.0,
                           estimator=ScriptedEstimator([1.0, 2.0, 3.0, 4.0, 5.0]), **PAPER_RULES)
    # Rising losses: RLROP (patience 0, min_delta 1) halves at every epoch
    # end after the first; two-phase ignores epoch 0 (GradualWarmup's epoch),
    # switches at epoch 2 (alpha = 0) and decays at 3 and 5 (eigenvalue and
    # loss rise, every other epoch).
    plateau = keras.callbacks.ReduceLROnPlateau(
        "loss", factor=0.5, patience=0, min_delta=1.0, min_lr=0.0)
    losses = [1.0, 1.0, 1.1, 1.2, 1.3, 1.4]
    with warns_nothing_learned(epoch=3):  # flat from the start, on purpose
        fit(model, [GradualWarmup(1), ScriptedLoss(losses), two_phase, plateau,
                    steps], 6)
    assert two_phase.controller.decay_epochs == [3, 5]
    ramp = [0.5, 0.75]  # 2 steps per epoch, 1 warmup epoch from 1/2
    lr, expected = F32(0.1), []
    for epoch in range(6):
        for step in range(2):
            factor = F32(ramp[step]) if epoch == 0 else F32(1.0)
            expected.append(float(lr * factor))
        if epoch in (3, 5):
            lr = F32(lr * F32(0.5))
        if epoch >= 1:
            lr = F32(lr * F32(0.5))
    assert steps.rates == expected
    # After fit: a plain float variable, settable.
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer), keras.Variable)
    assert float(model.optimizer.learning_rate) == float(lr)


def test_the_optimizer_is_as_the_user_left_it_after_fit():
    """LR callbacks, the setter and a later Keras-only fit all work."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    # A flat loss (plateau at epoch 3, after the warmup epoch): the
    # controller says so, and that none was found by half of the budget.
    with warns_no_plateau_by_half_of(4), warns_nothing_learned(epoch=3):
        fit(model, [GradualWarmup(1), ScriptedLoss([1.0, 1.0, 1.1, 1.2]),
                    TwoPhaseLR(regression_data(), plateau_patience=1,
                               extra_epochs_fraction=0.0,
                               estimator=ScriptedEstimator([1.0, 2.0, 3.0]),
                               **PAPER_RULES)], 4)
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
    for path in sys.argv[1:]:
        model = keras.models.load_model(path)
        # A schedule is a dict in the optimizer's config, a variable a float.
        rate = model.optimizer.get_config()["learning_rate"]
        print("LOADED", float(model.optimizer.learning_rate),
              rate["class_name"] if isinstance(rate, dict) else "Variable",
              "keras_lrphase" in sys.modules)
    """
)


def _load_in_fresh_process(paths, tmp_path, preamble=""):
    """Loads `paths` in a new Python; returns the (rate, type, package) rows."""
    script = tmp_path / "load.py"
    script.write_text(preamble + SAVED_MODEL)
    out = subprocess.run([sys.executable, str(script)] + [str(p) for p in paths],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [l.split()[1:] for l in out.stdout.splitlines() if l.startswith("LOADED")]


def test_a_model_saved_after_fit_loads_without_the_package(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
    # Epoch 0 is warmup; plateau and switch at epoch 2, a decay at 3 (a
    # flat loss: the controller's notes say so).
    with warns_no_plateau_by_half_of(4), warns_nothing_learned(epoch=3):
        fit(model, [GradualWarmup(1), ScriptedLoss([1.0, 1.0, 1.1, 1.2]),
                    TwoPhaseLR(regression_data(), plateau_patience=1,
                               extra_epochs_fraction=0.0,
                               estimator=ScriptedEstimator([1.0, 2.0]),
                               **PAPER_RULES)], 4)
    path = tmp_path / "model.keras"
    model.save(path)
    assert _load_in_fresh_process([path], tmp_path) == [
        [str(float(F32(0.05))), "Variable", "False"]]


class RaiseAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"raised at the end of epoch {epoch}")


def test_a_fit_that_raises_leaves_the_optimizer_as_it_was(tmp_path):
    """Keras calls no on_train_end when fit raises: the ramp goes anyway."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    with pytest.raises(RuntimeError, match="end of epoch 0"):
        fit(model, [GradualWarmup(3), RaiseAtEpochEnd(0)], 3)  # 6 ramp steps
    model.save(tmp_path / "after_the_raise.keras")
    # A plain fit trains with the optimizer's own learning rate: no ramp.
    steps = StepLearningRates()
    fit(model, [steps], 1)
    assert steps.rates == [float(F32(0.1))] * 2
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer),
                      keras.Variable)
    model.save(tmp_path / "after_a_plain_fit.keras")
    assert _load_in_fresh_process(
        [tmp_path / "after_the_raise.keras", tmp_path / "after_a_plain_fit.keras"],
        tmp_path,
    ) == [[str(float(F32(0.1))), "Variable", "False"]] * 2
    # A fit with the package's callbacks after the raise: the ramp goes on
    # from the optimizer's step (4 steps done), and ends with that fit.
    steps = StepLearningRates()
    fit(model, [GradualWarmup(3), steps], 1)
    assert steps.rates == warmup_ramp(0.1, 6, 6, 1 / 6, [1.0] * 6)[4:]
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer),
                      keras.Variable)


def test_model_checkpoint_files_load_without_the_package(tmp_path):
    """During the ramp (epoch 1) and after it (epochs 3 and 5)."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "m{epoch}.keras"))
    fit(model, [GradualWarmup(1), checkpoint], 5)
    rows = _load_in_fresh_process(
        [tmp_path / f"m{epoch}.keras" for epoch in (1, 3, 5)], tmp_path)
    assert rows == [[str(float(F32(0.1))), "Variable", "False"]] * 3


def test_files_that_hold_the_scaled_learning_rate_load_with_the_package(tmp_path):
    """Files written by earlier versions, which recorded ScaledLearningRate."""
    model = tiny_model(keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)))
    fit(model, [], 1)
    optimizer = model.optimizer

    def variable(value):
        return keras.Variable(value, dtype="float32", trainable=False)

    keras_compat.replace_learning_rate_object(optimizer, ScaledLearningRate(
        keras_compat.current_learning_rate_object(optimizer),
        keras_compat.raw_step_variable(optimizer), variable(0.5), variable(4.0),
        variable(0.25)))
    model.save(tmp_path / "scaled.keras")
    rows = _load_in_fresh_process([tmp_path / "scaled.keras"], tmp_path,
                                  "import keras_lrphase\n")
    # The schedule as given, at the saved step 2: 0.1 * 0.5 ** (2 / 4).
    [(rate, kind, imported)] = rows
    assert (kind, imported) == ("ExponentialDecay", "True")
    assert float(rate) == pytest.approx(0.1 * 0.5 ** 0.5, rel=1e-6)


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
        with warns_nothing_learned():
            fit(model, [ScriptedLoss([1.0, 1.0, 1.1, 1.2]), two_phase, record],
                4, batch_size=8)
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

class HeavyBall(keras.optimizers.Optimizer):
    """A user's momentum optimizer, v = m v - lr g and w = w + v, whose
    velocity holds the learning rate: it says so with `learning_rate_slots`."""

    def __init__(self, learning_rate, momentum, declares_momentum=True):
        super().__init__(learning_rate=learning_rate)
        if declares_momentum:
            self.momentum = momentum
        self.decay = momentum

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocity = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        velocity = self.velocity[keras_compat.variable_index(self, variable)]
        self.assign(velocity, velocity * self.decay - gradient * learning_rate)
        self.assign_add(variable, velocity)

    def learning_rate_slots(self):
        return list(getattr(self, "velocity", []))


@pytest.mark.parametrize("make, slots", [
    (lambda: HeavyBall(0.1, momentum=0.5), lambda o: o.velocity),
    (lambda: keras.optimizers.SGD(0.1, momentum=0.5), lambda o: o.momentums),
    (lambda: LARS(0.1, momentum=0.5), lambda o: o.velocities),
    (lambda: LARSWrapper(keras.optimizers.SGD(0.1, momentum=0.5)),
     lambda o: o.inner_optimizer.momentums),
], ids=["declared", "keras_sgd", "lars", "lars_wrapper_sgd"])
def test_momentum_correction_rescales_the_slots_that_hold_the_rate(make, slots):
    optimizer = make()
    w = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], F32))
    g = np.array([[0.3, 0.1], [-0.2, 0.7]], F32)
    optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
    (velocity,) = slots(optimizer)
    before = keras.ops.convert_to_numpy(velocity)
    assert np.all(before != 0)
    control = ControlledLearningRate.install(optimizer)
    control.enter_epoch(1)
    control.scale_by("decay", 0.25)
    control.enter_epoch(2)
    assert control.correct_momentum(2) == 0.25
    # A power of two: the rescaled float32 velocity is exact.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(velocity),
                                  before * F32(0.25))
    assert control.correct_momentum(2) == 1.0  # idempotent per step
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(velocity),
                                  before * F32(0.25))


def test_momentum_correction_refuses_an_optimizer_that_declares_no_slots():
    adam = keras.optimizers.Adam(0.1)
    adam.build([keras.Variable(np.ones(2, F32))])
    control = ControlledLearningRate.install(adam)
    control.enter_epoch(1)
    control.scale_by("decay", 0.5)
    control.enter_epoch(2)
    with pytest.raises(ValueError, match=r"Argument `optimizer` must keep its "
                       r"learning rate in slots it declares with "
                       r"`learning_rate_slots\(\)`.*Received: optimizer=<"):
        control.correct_momentum(2)
    # MomentumCorrection refuses it before the first epoch:
    with pytest.raises(ValueError, match=r"`learning_rate_slots\(\)` for "
                       r"MomentumCorrection.*its optimizer is Adam"):
        fit(tiny_model(keras.optimizers.Adam(0.1)), [MomentumCorrection()], 1)
    # Declaring slots without their decay per update is refused too.
    with pytest.raises(ValueError, match=r"HeavyBall defines "
                       r"`learning_rate_slots\(\)` but no float attribute "
                       r"`momentum`"):
        fit(tiny_model(HeavyBall(0.1, 0.5, declares_momentum=False)),
            [MomentumCorrection()], 1)


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


def test_steps_of_a_schedule_are_found_anywhere_between_epoch_starts():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [66, 132], [0.1, 0.01, 0.001])  # lower rates from steps 67 and 133
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(schedule))
    assert controlled.schedule_step_in(0, 66) is None
    assert controlled.schedule_step_in(0, 67) == 67
    assert controlled.schedule_step_in(67, 67) == 67
    assert controlled.schedule_step_in(68, 200) == 133
    assert controlled.schedule_step_in(134, 300) is None
    controlled.enter_epoch(44)
    controlled.enter_epoch(66)
    # Epochs of 22 steps: the step at 67 is inside the epoch starting at 66.
    assert controlled.drops_at_epoch_start(66, 22)
    assert not controlled.drops_at_epoch_start(66, None)  # not in (44, 66]
    controlled.enter_epoch(88)
    assert not controlled.drops_at_epoch_start(88, 22)
    assert controlled.drops_at_epoch_start(88, None)  # unknown epoch length


@pytest.mark.parametrize("schedule", [
    keras.optimizers.schedules.CosineDecay(0.1, 1000),
    # Decays so slowly at first that float32 holds its value for some steps
    # and then drops by one unit in the last place: not a step.
    keras.optimizers.schedules.CosineDecay(0.1, 1_000_000),
    keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5),
    keras.optimizers.schedules.PolynomialDecay(0.1, 300, 0.001),
])
def test_smooth_schedules_have_no_steps(schedule):
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(schedule))
    values = [float(keras.ops.convert_to_numpy(schedule(s))) for s in range(400)]
    assert values[399] < values[0]
    for first in (1, 2, 50, 200):
        assert controlled.schedule_step_in(first, 399) is None


def test_a_staircase_schedule_steps():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 40, 0.5, staircase=True)
    controlled = ControlledLearningRate.install(keras.optimizers.SGD(schedule))
    assert controlled.schedule_step_in(1, 100) == 40
    assert controlled.schedule_step_in(41, 100) == 80


def test_fit_calls_reuse_the_train_steps_with_and_without_the_ramp():
    """A program that calls fit once per round traces each step once."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    warmup, steps = GradualWarmup(2), StepLearningRates()  # 4 ramp steps
    functions = []
    seen = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: functions.append(keras_compat.train_function(model)))
    for r in range(4):  # 2 steps per round
        fit(model, [warmup, steps, seen], r + 1, initial_epoch=r)
    assert steps.rates == warmup_ramp(0.1, 8, 4, 1 / 4, [1.0] * 8)
    assert functions[0] is functions[1]  # the step with the ramp
    assert functions[2] is functions[3]  # Keras' own, after the ramp
    assert functions[1] is not functions[2]
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer),
                      keras.Variable)


ROUNDS = textwrap.dedent(
    """
    import numpy as np, keras
    from keras_lrphase import GradualWarmup

    unrelated = None
    if keras.backend.backend() == "jax":
        import jax
        unrelated = jax.jit(lambda v: v * 2.0)  # compiled by the user
        unrelated(np.ones(3, "float32"))
    x = np.ones((4, 1), "float32"); y = np.zeros((4, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    functions = []
    seen = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: functions.append(model.train_function))
    warmup = GradualWarmup(2)
    for r in range(4):
        model.fit(x, y, batch_size=2, initial_epoch=r, epochs=r + 1,
                  verbose=0, shuffle=False, callbacks=[warmup, seen])
    print(keras.backend.backend(), float(model.layers[0].kernel.numpy()[0, 0]),
          len({id(f) for f in functions}),
          unrelated._cache_size() if unrelated is not None else 1)
    """
)


@pytest.mark.jax
@pytest.mark.torch
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_fit_calls_with_warmup_on_each_backend(tmp_path, backend):
    """The ramp reaches the compiled step; no fit traces it again; JAX's
    caches of the user's own functions are kept."""
    pytest.importorskip(backend)
    script = tmp_path / "rounds.py"
    script.write_text(ROUNDS)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND=backend), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    name, weight, functions, unrelated_traces = out.stdout.split()[-4:]
    # w <- w (1 - 2 lr) at each of the 8 steps: 2 per round, the first 4
    # on the ramp 0.1 * (1/4 + 3/4 * s / 4).
    expected = 1.0
    for s in range(8):
        lr = 0.1 * (0.25 + 0.75 * s / 4) if s < 4 else 0.1
        expected *= 1 - 2 * lr
    assert name == backend
    assert float(weight) == pytest.approx(expected, rel=1e-5)
    assert int(functions) == 2  # with the ramp (rounds 1-2), Keras' own (3-4)
    assert int(unrelated_traces) == 1
