import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase import ControlledLearningRate
from keras_lrphase import GradualWarmup

F32 = np.float32


def test_scale_is_the_product_of_named_factors_over_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    optimizer = keras.optimizers.SGD(schedule)
    controlled = ControlledLearningRate.install(optimizer)
    assert ControlledLearningRate.install(optimizer) is controlled
    controlled.set_factor("a", 0.5)
    controlled.set_factor("b", 0.2)
    controlled.set_factor("a", 0.25)
    assert controlled.factors == {"a": 0.25, "b": 0.2}
    for step in (0, 7, 30):
        expected = 0.1 * 0.5 ** (step / 10) * 0.25 * 0.2
        assert controlled.value_at(step) == pytest.approx(expected, rel=1e-6)


def test_warmup_ramp_values():
    controlled = ControlledLearningRate(0.8)
    controlled.set_warmup(4, 0.25)
    got = [controlled.value_at(step) for step in range(6)]
    expected = [0.8 * (0.25 + 0.75 * step / 4) for step in range(4)] + [0.8, 0.8]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_version_counts_changes_only():
    controlled = ControlledLearningRate(keras.Variable(0.1))
    controlled.set_factor("a", 0.5)
    controlled.set_factor("a", 0.5)
    controlled.set_warmup(10, 0.1)
    controlled.set_warmup(10, 0.1)
    controlled.set_base(0.2)
    controlled.set_base(0.2)
    assert controlled.version == 3


def test_config_round_trip_keeps_the_control_state():
    schedule = keras.optimizers.schedules.CosineDecayRestarts(0.4, 20)
    controlled = ControlledLearningRate(schedule)
    controlled.set_factor("two_phase_lr", 0.25)
    controlled.set_warmup(5, 0.2)
    config = controlled.get_config()
    restored = ControlledLearningRate.from_config(config)
    assert restored.get_config() == config
    for step in (0, 3, 12, 33):
        assert restored.value_at(step) == controlled.value_at(step)


def test_model_save_and_load_round_trip_the_optimizer_state(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.integers(0, 2, size=32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[GradualWarmup(1)])
    ControlledLearningRate.install(model.optimizer).set_factor("t", 0.25)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer._learning_rate, ControlledLearningRate)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables) == 3
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    assert float(loaded.optimizer.learning_rate) == float(F32(0.1 * 0.25))


def test_installs_through_loss_scale_optimizer():
    inner = keras.optimizers.SGD(0.1)
    outer = keras.optimizers.LossScaleOptimizer(inner)
    controlled = ControlledLearningRate.install(outer)
    assert inner._learning_rate is controlled
    controlled.set_factor("x", 0.5)
    assert float(outer.learning_rate) == pytest.approx(0.05)


def test_errors():
    with pytest.raises(ValueError, match="base=-1.0"):
        ControlledLearningRate(-1.0)
    controlled = ControlledLearningRate(0.1)
    with pytest.raises(ValueError, match="value=0.0"):
        controlled.set_factor("a", 0.0)
    with pytest.raises(ValueError, match="name=''"):
        controlled.set_factor("", 0.5)
    with pytest.raises(ValueError, match="initial_fraction=1.5"):
        controlled.set_warmup(3, 1.5)
    with pytest.raises(ValueError, match="steps=-1"):
        controlled.set_warmup(-1, 0.5)
    with pytest.raises(TypeError, match="can only be set"):
        controlled.set_base(0.2)
    with pytest.raises(TypeError, match="plain callable"):
        ControlledLearningRate.install(keras.optimizers.SGD(lambda: 0.1))
    with pytest.raises(TypeError, match="keras.optimizers.Optimizer"):
        ControlledLearningRate.install("sgd")


JAX_REFRESH = textwrap.dedent(
    """
    import numpy as np, keras
    from keras_lrphase import ControlledLearningRate

    class Halve(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            self.lr = ControlledLearningRate.install(model.optimizer)
        def on_epoch_begin(self, epoch, logs=None):
            self.lr.refresh(self.model)
        def on_epoch_end(self, epoch, logs=None):
            self.lr.set_factor("h", self.lr.factor("h") * 0.5)

    x = np.ones((8, 1), "float32"); y = np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[Halve()])
    print(keras.backend.backend(), float(model.layers[0].kernel.numpy()[0, 0]))
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
    name, weight = out.stdout.split()[-2:]
    # w <- w - lr * 2w with lr = 0.1, 0.05, 0.025 in the three epochs.
    assert name == backend
    assert float(weight) == pytest.approx(0.8 * 0.9 * 0.95, rel=1e-6)
