"""The device pipeline: the NumPy pipeline's batches, made on the accelerator."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_lrphase.data import DeviceTrainBatches
from keras_lrphase.data import TrainBatches
from keras_lrphase.training import runner
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.run_config import RunConfig

pytestmark = pytest.mark.backend_neutral

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
        "phase", "hessian_max_eigenvalue")


def _images(n=150, size=(12, 10), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n,) + size + (3,)).astype("uint8")
    return x, rng.integers(0, 10, n)


@pytest.mark.parametrize("augment", ["none", "crop", "crop-flip"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_device_batches_are_the_numpy_pipelines_batches(augment, accumulate):
    x, y = _images()
    args = (x, y, 32, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    device = DeviceTrainBatches(*args, augment=augment, accumulate=accumulate,
                                seed=5, initial_epoch=3)
    host = TrainBatches(*args, augment=augment, accumulate=accumulate, seed=5,
                        initial_epoch=3)
    assert len(device) == len(host) == 4 * accumulate
    for _ in range(2):  # two epochs: a new permutation and new draws
        for index in range(len(host)):
            images, labels = device[index]
            # Device tensors of the backend, not NumPy arrays.
            assert not isinstance(images, np.ndarray)
            want_images, want_labels = host[index]
            np.testing.assert_array_equal(ops.convert_to_numpy(labels),
                                          want_labels)
            np.testing.assert_allclose(ops.convert_to_numpy(images),
                                       want_images, rtol=0, atol=2e-6)
        device.on_epoch_end()
        host.on_epoch_end()


def test_the_epoch_plan_is_copied_once_per_epoch():
    x, y = _images()
    batches = DeviceTrainBatches(x, y, 32, [0.5] * 3, [0.25] * 3,
                                 augment="crop-flip")
    plan = batches._epoch_plan()
    for index in range(len(batches)):
        batches[index]
    assert batches._epoch_plan() is plan
    batches.on_epoch_end()
    assert batches._epoch_plan() is not plan
    # Its crops reach every offset and mirror about half the images.
    _, offsets, mirror = (ops.convert_to_numpy(a) for a in batches._epoch_plan())
    assert offsets.shape == (len(batches), 2, 32)
    assert set(np.unique(offsets)) == {0, 1, 2}  # padding round(10 / 8) = 1
    assert 0.3 < mirror.mean() < 0.7


def _config(**overrides):
    values = dict(dataset="digits", epochs=4, batch_size=128, train_size=512,
                  test_size=200, schedule="two-phase", warmup_epochs=1,
                  plateau_patience=1, lr=0.2, augment="crop")
    values.update(overrides)
    return RunConfig(**values)


def _rows(folder):
    return [{k: r[k] for k in KEYS}
            for r in EpochRecorder.read(os.path.join(folder, "history.csv"))]


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.skipif(ON_TENSORFLOW, reason="the device pipeline is for JAX and torch")
# A 4-epoch two-phase run: TwoPhaseLR's note that half the budget passed
# without a plateau is expected (and is not what this test checks).
@pytest.mark.filterwarnings("ignore:TwoPhaseLR. half of the:UserWarning")
def test_a_run_on_the_device_pipeline_trains_as_the_numpy_pipeline_and_resumes(
        tmp_path, monkeypatch):
    numpy_run = runner.run_training(_config(pipeline="numpy"),
                                    str(tmp_path / "numpy"), verbose=0, log=None)
    build = runner.build_callbacks

    def crashing(*args, **kwargs):
        callbacks, controller = build(*args, **kwargs)
        return callbacks + [_Crash()], controller

    monkeypatch.setattr(runner, "build_callbacks", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(_config(pipeline="device"), str(tmp_path / "device"),
                            verbose=0, log=None, resume=True)
    monkeypatch.setattr(runner, "build_callbacks", build)
    assert len(_rows(str(tmp_path / "device"))) == 1
    device_run = runner.run_training(_config(pipeline="device"),
                                     str(tmp_path / "device"), verbose=0,
                                     log=None, resume=True)
    assert device_run["config"]["pipeline"] == "device"
    assert device_run["epochs_completed"] == 4
    # The same batches: the same training, to float rounding.
    for got, want in zip(_rows(str(tmp_path / "device")),
                         _rows(str(tmp_path / "numpy"))):
        assert got["phase"] == want["phase"]
        for key in ("loss", "val_loss", "learning_rate"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4)
    assert device_run["decay_epochs"] == numpy_run["decay_epochs"]


@pytest.mark.tensorflow_backend
@pytest.mark.skipif(not ON_TENSORFLOW, reason="the refusal is TensorFlow's")
def test_the_device_pipeline_is_refused_on_tensorflow_naming_the_argument():
    with pytest.raises(ValueError, match=r"Argument `pipeline` needs the JAX or "
                       r"torch backend .*Received: pipeline='device'"):
        _config(pipeline="device").validate()


def test_the_device_pipeline_is_refused_for_streamed_imagenet():
    with pytest.raises(ValueError, match=r"Received: pipeline='device'"):
        RunConfig(dataset="imagenet", pipeline="device").validate(
            check_data=False)


def test_a_run_may_resume_on_the_other_of_the_numpy_and_device_pipelines():
    saved = _config(pipeline="numpy").to_dict()
    assert _config(pipeline="device").matches(saved)
    assert not _config(pipeline="tf.data").matches(saved)
    assert not _config(pipeline="device", lr=0.3).matches(saved)
