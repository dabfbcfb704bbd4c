import keras
import numpy as np
import pytest

from keras_lrphase.training.run_config import RunConfig
from keras_lrphase import HessianMonitor
from keras_lrphase.training.builders import build_callbacks
from keras_lrphase.training.builders import build_learning_rate
from keras_lrphase.training.builders import build_optimizer
from keras_lrphase.training.runner import prepare_data

pytestmark = pytest.mark.backend_neutral


def _values(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(s))) for s in steps]


def test_step_schedule_boundaries_are_epochs_times_micro_steps():
    config = RunConfig(epochs=10, lr=0.4, decay_epochs=(4, 7)).resolved()
    schedule = build_learning_rate(config, micro_steps_per_epoch=6)
    # Epoch 4 starts at micro-step 24: steps 0..23 at 0.4, 24..41 at 0.04.
    np.testing.assert_allclose(_values(schedule, [0, 23, 24, 41, 42, 59]),
                               [0.4, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-6)


def test_two_phase_uses_a_constant_and_cosine_restarts_a_schedule():
    assert build_learning_rate(RunConfig(schedule="two-phase", lr=0.3).resolved(), 5) == 0.3
    config = RunConfig(schedule="cosine-restarts", lr=1.0, restart_epochs=2,
                       restart_mult=2.0).resolved()
    schedule = build_learning_rate(config, micro_steps_per_epoch=5)
    # First period 10 steps: cos at step 5 is 0.5; restart at 10; the
    # second period is 20 steps long (half-way at step 20).
    np.testing.assert_allclose(_values(schedule, [0, 5, 10, 20]), [1.0, 0.5, 1.0, 0.5],
                               atol=1e-6)


def test_build_optimizer():
    sgd = build_optimizer(RunConfig(momentum=0.8, accumulate=2, batch_size=8), 0.1)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == 0.8 and sgd.gradient_accumulation_steps == 2
    assert build_optimizer(RunConfig(), 0.1).gradient_accumulation_steps is None
    lars = build_optimizer(RunConfig(lars=0.01), 0.1)
    assert type(lars).__name__ == "LARS"
    assert lars.trust_coefficient == 0.01 and lars.weight_decay == 0.0


def test_two_phase_and_monitor_share_one_estimate_per_epoch():
    config = RunConfig(schedule="two-phase", hessian_every=1).resolved()
    x = np.zeros((4, 8, 8, 1), "float32")
    y = np.zeros((4,), "int32")
    callbacks, controller = build_callbacks(config, 3, (x, y))
    monitor = [c for c in callbacks if isinstance(c, HessianMonitor)][0]
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    for callback in callbacks:
        callback.set_model(model)
    assert controller.providers[0] is monitor.providers[0]


def test_build_callbacks_orders_controllers_before_checkpoints(tmp_path):
    config = RunConfig(schedule="autodecay", warmup_epochs=2,
                       momentum_correction=True, autodecay_window=4,
                       stage_checkpoints=str(tmp_path), hessian_every=0).resolved()
    callbacks, controller = build_callbacks(config, 3, None)
    assert [type(c).__name__ for c in callbacks] == [
        "GradualWarmup", "AutoDecay", "MomentumCorrection", "StageCheckpoint"]
    assert controller.controller.window == 4
    assert controller.controller.decay_factor == 0.1
    assert controller.controller.warmup_epochs == 2


def test_prepare_data_subsets_and_checks():
    data = prepare_data(RunConfig(train_size=100, test_size=50, batch_size=64))
    assert np.bincount(data.y_train).tolist() == [10] * 10
    assert len(data.y_test) == 50
    with pytest.raises(ValueError, match="batch_size=200"):
        prepare_data(RunConfig(train_size=100, batch_size=200))
    with pytest.raises(ValueError, match="hessian_batch_size=101"):
        prepare_data(RunConfig(train_size=100, batch_size=10, hessian_batch_size=101))
