import pytest

from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.run_config import default_decay_epochs

pytestmark = pytest.mark.backend_neutral


def test_resolved_defaults():
    config = RunConfig(dataset="cifar10", epochs=300).resolved()
    assert config.model == "resnet20"
    assert config.decay_epochs == (150, 225) and config.decay_factor == 0.1
    two_phase = RunConfig(schedule="two-phase").resolved()
    assert two_phase.model == "small-cnn" and two_phase.decay_factor == 0.5
    assert two_phase.decay_epochs is None
    cosine = RunConfig(schedule="cosine-restarts").resolved()
    assert cosine.restart_epochs == 10 and cosine.decay_factor is None
    assert RunConfig(dataset="svhn").resolved().model == "wrn-16-8"
    assert RunConfig(dataset="cifar100").resolved().model == "wrn-28-10"


def test_default_decay_epochs():
    assert default_decay_epochs(300) == (150, 225)
    assert default_decay_epochs(250) == (125, 188)
    assert default_decay_epochs(4) == (2, 3)
    assert default_decay_epochs(3) == (2,)
    assert default_decay_epochs(2) == (1,)
    assert default_decay_epochs(1) == ()


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="mnist"), "dataset='mnist'"),
    (dict(model="resnet21"), "model='resnet21'"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(epochs=2.5), "epochs=2.5"),
    (dict(batch_size=10, accumulate=4), "batch_size=10, accumulate=4"),
    (dict(epochs=3, warmup_epochs=4), "epochs=3, warmup_epochs=4"),
    (dict(lr=0.0), "lr=0.0"),
    (dict(momentum=1.0), "momentum=1.0"),
    (dict(weight_decay=-1e-4), "weight_decay=-0.0001"),
    (dict(lars=-0.01), "lars=-0.01"),
    (dict(schedule="linear"), "schedule='linear'"),
    (dict(decay_factor=1.5), "decay_factor=1.5"),
    (dict(schedule="cosine-restarts", decay_factor=0.5), "decay_factor=0.5"),
    (dict(decay_epochs=(10, 5)), "decay_epochs='10,5'"),
    (dict(epochs=30, decay_epochs=(10, 30)), "decay_epochs='10,30'"),
    (dict(schedule="two-phase", decay_epochs=(5,)), "only used by schedule='step'"),
    (dict(plateau_patience=3), "plateau_patience=3"),
    (dict(min_delta=0.01), "min_delta=0.01"),
    (dict(schedule="two-phase", min_delta=-1.0), "min_delta=-1.0"),
    (dict(restart_epochs=5), "restart_epochs=5"),
    (dict(schedule="cosine-restarts", restart_mult=0.5), "restart_mult=0.5"),
    (dict(augment="mixup"), "augment='mixup'"),
    (dict(pipeline="grain"), "pipeline='grain'"),
    (dict(precision="fp16"), "precision='fp16'"),
    (dict(hessian_batch_size=0), "hessian_batch_size=0"),
    (dict(hessian_every=-1), "hessian_every=-1"),
    (dict(dataset="folder"), "required for dataset='folder'"),
])
def test_validation_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=None) as info:
        RunConfig(**kwargs).validate()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_to_dict_is_json_ready():
    values = RunConfig(decay_epochs=(3, 4), epochs=5).to_dict()
    assert values["decay_epochs"] == [3, 4] and values["dataset"] == "digits"
    assert RunConfig(**dict(values, decay_epochs=(3, 4))) == RunConfig(
        decay_epochs=(3, 4), epochs=5)


def test_numbers_are_checked_as_the_library_checks_them():
    import json

    import numpy as np

    # A bool is never a number (as in the library's arguments); the command
    # line's wording stays "a positive number".
    with pytest.raises(ValueError) as info:
        RunConfig(lr=True).validate(check_data=False)
    assert str(info.value) == (
        "Argument `lr` must be a positive number. Received: lr=True")
    # NumPy scalars are numbers, written to JSON as Python numbers.
    config = RunConfig(batch_size=np.int64(64), lr=np.float32(0.5))
    config.validate(check_data=False)
    values = json.loads(json.dumps(config.to_dict()))
    assert values["batch_size"] == 64 and values["lr"] == 0.5
    assert config.matches(values)


@pytest.mark.tensorflow_backend
def test_pipeline_auto_resolves_to_tf_data_where_tensorflow_is_installed():
    assert RunConfig().resolved().pipeline == "tf.data"
    assert RunConfig(pipeline="numpy").resolved().pipeline == "numpy"


def test_bf16_trains_with_bfloat16_compute_and_float32_weights(tmp_path):
    import keras

    from keras_lrphase.training import runner

    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["policy"] = self.model.dtype_policy.name
            seen["weights"] = {w.dtype for w in self.model.trainable_weights}
            seen["global"] = keras.config.dtype_policy().name

    build = runner.build_callbacks
    runner.build_callbacks = lambda *a, **k: (build(*a, **k)[0] + [Probe()], None)
    try:
        summary = runner.run_training(
            RunConfig(dataset="digits", epochs=1, batch_size=256, train_size=512,
                      test_size=100, precision="bf16"),
            str(tmp_path), verbose=0, log=None)
    finally:
        runner.build_callbacks = build
    assert seen == {"policy": "mixed_bfloat16", "weights": {"float32"},
                    "global": "float32"}
    assert summary["config"]["precision"] == "bf16"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("epochs", [1, 2, 3, 80])
def test_a_resolved_config_is_valid_and_resolves_to_itself(epochs):
    resolved = RunConfig(epochs=epochs).resolved()
    assert resolved.validate(check_data=False) is resolved
    assert resolved.resolved() == resolved
    assert resolved.decay_epochs == {1: (), 2: (1,), 3: (2,), 80: (40, 60)}[epochs]
