import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lrphase.callbacks import GradualWarmup
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate
from scripted_training import Crash
from scripted_training import Interrupted
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import tiny_model
from scripted_training import warmup_ramp
from keras_lrphase.backend import keras_compat

F32 = np.float32


def fit(model, callbacks, epochs, batch_size=2, **kwargs):
    x, y = regression_data()
    return model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
        callbacks=callbacks, **kwargs,
    )


def test_default_ramp_exact_per_step():
    model = tiny_model(keras.optimizers.SGD(0.2))
    steps = StepLearningRates()
    warmup = GradualWarmup(2)
    fit(model, [warmup, steps], 3)  # 8 samples / batch 2 = 4 steps per epoch
    assert warmup.warmup_steps == 8
    # f0 = 1/8: 0.2 * (1/8 + 7/8 * s/8) for s < 8, then 0.2.
    expected = warmup_ramp(0.2, 12, 8, 1 / 8, [1.0] * 12)
    assert steps.rates == expected
    np.testing.assert_allclose(
        steps.rates[:9], 0.2 * np.array([8, 15, 22, 29, 36, 43, 50, 57, 64]) / 64,
        rtol=1e-7,
    )


def test_ramp_changes_the_updates():
    """With one step per epoch, each SGD step uses the ramped LR."""
    x, y = regression_data()
    model = tiny_model(keras.optimizers.SGD(0.2))
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: weights.append(model.get_weights())
    )
    fit(model, [GradualWarmup(4, initial_lr=0.04), record], 5, batch_size=8)
    w = [v.astype("float64") for v in tiny_model(keras.optimizers.SGD()).get_weights()]
    # f0 = 0.2; ramp over 4 steps: 0.2 * (0.2 + 0.8 * s / 4).
    for step, lr in enumerate([0.04, 0.08, 0.12, 0.16, 0.2]):
        kernel, bias = w
        residual = x @ kernel + bias - y
        w = [
            kernel - lr * 2 * x.T @ residual / len(x),
            bias - lr * 2 * residual.mean(axis=0),
        ]
        np.testing.assert_allclose(weights[step][0], w[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[step][1], w[1], rtol=1e-5, atol=1e-6)


def test_explicit_initial_and_target_lr():
    model = tiny_model(keras.optimizers.SGD(0.5))
    steps = StepLearningRates()
    fit(model, [GradualWarmup(1, initial_lr=0.02, target_lr=0.1), steps], 2)
    # Base set to 0.1; f0 = 0.02 / 0.1 = 0.2; 4 warmup steps.
    assert steps.rates == warmup_ramp(0.1, 8, 4, 0.02 / 0.1, [1.0] * 8)
    assert steps.rates[0] == pytest.approx(0.02, rel=1e-6)
    assert float(model.optimizer.learning_rate) == float(F32(0.1))


def test_ramp_is_relative_to_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
    model = tiny_model(keras.optimizers.SGD(schedule))
    steps = StepLearningRates()
    fit(model, [GradualWarmup(1), steps], 2)
    base = [F32(keras.ops.convert_to_numpy(schedule(s))) for s in range(8)]
    ramp = [F32(0.25) + F32(0.75) * (F32(s) / F32(4)) for s in range(4)] + [F32(1)] * 4
    np.testing.assert_allclose(steps.rates, [b * r for b, r in zip(base, ramp)], rtol=1e-6)


def test_units_are_raw_steps_under_gradient_accumulation():
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    model = tiny_model(optimizer)
    steps = StepLearningRates()
    warmup = GradualWarmup(1)
    fit(model, [warmup, steps], 2)
    # 4 batches (micro-steps) per epoch: the ramp spans the first epoch's
    # 4 batches, i.e. 2 parameter updates.
    assert warmup.warmup_steps == 4
    assert steps.rates == warmup_ramp(0.1, 8, 4, 0.25, [1.0] * 8)
    assert int(optimizer.iterations) == 4 and keras_compat.raw_step(optimizer) == 8


def test_zero_warmup_epochs_is_a_no_op():
    model = tiny_model(keras.optimizers.SGD(0.1))
    steps = StepLearningRates()
    fit(model, [GradualWarmup(0), steps], 1)
    assert steps.rates == [float(F32(0.1))] * 4


def test_unknown_steps_per_epoch():
    x, y = regression_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2).filter(
        lambda a, b: True
    )
    assert dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY
    model = tiny_model(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="Pass `steps_per_epoch` to GradualWarmup"):
        model.fit(dataset, epochs=1, verbose=0, shuffle=False,
                  callbacks=[GradualWarmup(1)])
    steps = StepLearningRates()
    warmup = GradualWarmup(1, steps_per_epoch=4)
    with pytest.warns(UserWarning, match="ran out of data"):
        # Keras finds the end of an unknown-cardinality epoch by trying one
        # batch more (a batch-begin hook call without a step).
        model.fit(dataset, epochs=1, verbose=0, shuffle=False,
                  callbacks=[warmup, steps])
    assert warmup.warmup_steps == 4
    assert steps.rates[:4] == warmup_ramp(0.1, 4, 4, 0.25, [1.0] * 4)


def test_target_lr_with_a_schedule_is_an_error():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
    model = tiny_model(keras.optimizers.SGD(schedule))
    with pytest.raises(ValueError, match="`target_lr` can only be used"):
        fit(model, [GradualWarmup(1, target_lr=0.1)], 1)


def test_initial_lr_above_target_is_an_error():
    model = tiny_model(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="initial_lr=0.5, target learning rate=0.1"):
        fit(model, [GradualWarmup(1, initial_lr=0.5)], 1)


def test_set_base_of_controlled_learning_rate():
    optimizer = keras.optimizers.SGD(0.1)
    controlled = ControlledLearningRate.install(optimizer)
    controlled.set_base(0.3)
    assert controlled.value_at(0) == float(F32(0.3))
    with pytest.raises(ValueError, match="Received: value=-1"):
        controlled.set_base(-1)
    schedule = ControlledLearningRate.install(keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)))
    with pytest.raises(ValueError, match="ExponentialDecay"):
        schedule.set_base(0.1)


def test_target_lr_is_not_reapplied_when_a_checkpoint_is_restored(tmp_path):
    """BackupAndRestore on either side: the restored (decayed) LR wins."""
    for order in ("before", "after"):
        model = tiny_model(keras.optimizers.SGD(0.1))
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / order))
        warmup = GradualWarmup(1, target_lr=0.4)
        callbacks = [backup, warmup] if order == "before" else [warmup, backup]
        stop = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, l: model.optimizer.__setattr__(
                "learning_rate", 0.01) if e == 1 else None)
        try:
            fit(model, [stop] + callbacks + [Crash(2)], 4)
        except Interrupted:
            pass
        resumed = tiny_model(keras.optimizers.SGD(0.1))
        steps = StepLearningRates()
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / order))
        warmup = GradualWarmup(1, target_lr=0.4)
        callbacks = [backup, warmup] if order == "before" else [warmup, backup]
        fit(resumed, callbacks + [steps], 4)
        assert steps.rates == [float(F32(0.01))] * 8, order


def test_no_per_batch_hooks():
    for name in ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                 "on_train_batch_end", "on_epoch_begin", "on_epoch_end"):
        assert name not in GradualWarmup.__dict__


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((-1,), {}, "`warmup_epochs` must be an integer >= 0. Received: warmup_epochs=-1"),
        ((1.5,), {}, "Received: warmup_epochs=1.5"),
        ((1,), dict(initial_lr=0.0), "`initial_lr` must be a finite number > 0. Received: initial_lr=0.0"),
        ((1,), dict(target_lr=float("inf")), "Received: target_lr=inf"),
        ((1,), dict(initial_lr=0.2, target_lr=0.1), "`initial_lr` must not exceed `target_lr`"),
        ((1,), dict(steps_per_epoch=0), "`steps_per_epoch` must be an integer >= 1. Received: steps_per_epoch=0"),
    ],
)
def test_argument_validation(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualWarmup(*args, **kwargs)
