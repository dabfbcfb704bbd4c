"""The `imagenet-table5` preset: settings, data, preprocessing and model."""

import colorsys
import dataclasses
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from keras_lrphase.cli import main
from keras_lrphase.data import check_dataset
from keras_lrphase.data import load_dataset
from keras_lrphase.data import imagenet_preprocessing as prep
from keras_lrphase.models import get_model
from keras_lrphase.models import is_model_name
from keras_lrphase.models.imagenet_resnet import imagenet_resnet50
from keras_lrphase.presets import get_preset
from keras_lrphase.presets import preset_time
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.runner import HISTORY_FILE
from keras_lrphase.training.runner import run_training


# -- the preset ---------------------------------------------------------------

def test_preset_mirrors_table5_and_goyal_et_al():
    preset = get_preset("imagenet-table5")
    assert (preset.requires_data_dir, preset_time(preset)) == (
        False, "needs an accelerator")
    runs = [(run, config.resolved()) for run, config in preset.configs()]
    # label: (batch, accumulate, lr, schedule, decay epochs, beta, LARS, paper)
    assert {run.label: (c.batch_size, c.accumulate, c.lr, c.schedule,
                        c.decay_epochs, c.decay_factor, c.lars, run.paper)
            for run, c in runs} == {
        "small-batch": (256, 1, 0.1, "step", (30, 60, 80), 0.1, None, 76.79),
        "large-batch": (16384, 64, 6.4, "step", (30, 60, 80), 0.1, None, 74.91),
        "LARS": (16384, 64, 3.2, "step", (30, 60, 80), 0.1, 0.001, 76.15),
        "two-phase": (16384, 64, 6.4, "two-phase", None, 0.5, None, 76.17),
        "two-phase + LARS": (16384, 64, 3.2, "two-phase", None, 0.5, 0.001,
                             76.67)}
    assert [run.label for run, _ in runs][0] == "small-batch"
    for _, config in runs:
        config.validate(check_data=False)
        assert (config.dataset, config.model, config.epochs, config.image_size) == (
            "imagenet", "imagenet-resnet50", 100, 224)
        assert (config.warmup_epochs, config.momentum, config.weight_decay) == (
            10, 0.9, 1e-4)
        assert (config.hessian_every, config.hessian_batch_size) == (1, 1024)
        assert config.augment == "auto" and config.pipeline == "tf.data"
        assert config.batch_size // config.accumulate == 256
    # Linear scaling between the two batches (0.1 x 16384 / 256 = 6.4).
    table = {run.label: c for run, c in runs}
    assert table["large-batch"].lr == pytest.approx(0.1 * 16384 / 256)
    assert "32 is the other reading" in preset.notes


def test_epoch_override_scales_the_goyal_schedule():
    table = {run.label: c for run, c in
             get_preset("imagenet-table5").configs(epochs=10)}
    assert table["large-batch"].decay_epochs == (3, 6, 8)
    assert table["large-batch"].warmup_epochs == 1


@pytest.mark.parametrize(
    "source", ["tfds", pytest.param("folder", marks=pytest.mark.slow)])
def test_the_preset_runs_an_epoch_on_tiny_data(source, tmp_path):
    """The two-phase + LARS row: 1 epoch, a tiny model, 16-pixel crops."""
    run, config = [(r, c) for r, c in
                   get_preset("imagenet-table5").configs(epochs=1)][-1]
    assert run.label == "two-phase + LARS"
    config = dataclasses.replace(
        config, model="small-cnn", image_size=16, batch_size=24, accumulate=8,
        hessian_batch_size=24, eval_batch_size=16)
    if source == "folder":
        _imagenet_folder(tmp_path / "imagenet", per_class=(8, 2))
        config = dataclasses.replace(config, data_dir=str(tmp_path / "imagenet"))
        summary = run_training(config, str(tmp_path / "run"), verbose=0, log=None)
        assert summary["dataset"]["source"] == str(tmp_path / "imagenet")
        assert (summary["dataset"]["train_examples"],
                summary["dataset"]["test_examples"]) == (24, 6)
    else:
        with tfds.testing.mock_data(num_examples=24):
            summary = run_training(config, str(tmp_path / "run"), verbose=0,
                                   log=None)
        assert summary["dataset"]["source"] == "tfds:imagenet2012"
        assert summary["dataset"]["num_classes"] == 1000
    assert summary["epochs_completed"] == 1 and summary["steps_per_epoch"] == 1
    assert summary["dataset"]["input_shape"] == [16, 16, 3]
    assert summary["dataset"]["augment"] == "crop-flip-color"
    assert summary["config"]["lars"] == 0.001
    rows = EpochRecorder.read(str(tmp_path / "run" / HISTORY_FILE))
    assert math.isfinite(rows[-1]["hessian_max_eigenvalue"])
    assert math.isfinite(rows[-1]["val_accuracy"])


# -- the data -----------------------------------------------------------------

def _imagenet_folder(root, classes=("n02", "n01", "n03"), per_class=(3, 2),
                     evaluation="val"):
    """JPEG/PNG images of assorted sizes; pixel (0, 0) encodes the class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class[0]), (evaluation, per_class[1])):
        for c, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(count):
                shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)), 3)
                image = rng.integers(0, 256, shape).astype("uint8")
                encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
                ext = "png" if i % 2 else "JPEG"
                with open(os.path.join(folder, f"{i}.{ext}"), "wb") as f:
                    f.write(encode(image).numpy())


def test_folder_is_listed_in_sorted_class_order_and_subsets_are_balanced(tmp_path):
    _imagenet_folder(tmp_path, evaluation="test")
    data = load_dataset("imagenet", str(tmp_path), image_size=16)
    assert data.class_names == ("n01", "n02", "n03")
    assert (data.train_examples, data.test_examples) == (9, 6)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert os.path.basename(os.path.dirname(data.train.paths[0])) == "n01"
    small = data.subset(train_size=3, test_size=3)
    assert sorted(small.train.labels.tolist()) == [0, 1, 2]
    assert sorted(small.test.labels.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="train_size=10"):
        data.subset(train_size=10)
    batches = list(data.train_dataset(9, accumulate=3, seed=0))
    assert [tuple(x.shape) for x, _ in batches] == [(3, 16, 16, 3)] * 3
    again = list(data.train_dataset(9, accumulate=3, seed=0))
    np.testing.assert_array_equal(batches[0][0], again[0][0])
    x, y = data.hessian_batch(4, seed=0)
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32 and y.shape == (4,)
    with pytest.raises(ValueError, match="size=10"):
        data.hessian_batch(10)


def test_missing_data_is_said_with_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="The ImageNet data is not in .* does "
                       "not download it.*tfds build imagenet2012"):
        check_dataset("imagenet", str(tmp_path))
    (tmp_path / "imagenet2012").mkdir()  # a TFDS folder, but nothing prepared
    with pytest.raises(ValueError, match="The ImageNet data is not in"):
        load_dataset("imagenet", str(tmp_path))
    flat = tmp_path / "flat"
    (flat / "train" / "n01").mkdir(parents=True)
    (flat / "val").mkdir()
    (flat / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match="val/ folder .* has no class folders"):
        check_dataset("imagenet", str(flat))
    (flat / "val" / "n02").mkdir()
    with pytest.raises(ValueError, match="train/ and val/ differ"):
        check_dataset("imagenet", str(flat))


def test_command_line_errors_before_training(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["compare", "--preset", "imagenet-table5", "--data-dir",
                 str(tmp_path), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "The ImageNet data is not in" in err
    assert main(["train", "--dataset", "cifar10", "--image-size", "64",
                 "--out", out]) == 2
    assert ("--image-size is only used by --dataset='imagenet'. Received: "
            "--image-size=64") in capsys.readouterr().err
    for argv, message in ((["--image-size", "4"], "--image-size=4"),
                          (["--pipeline", "numpy"], "--pipeline='numpy'")):
        assert main(["train", "--dataset", "imagenet", "--out", out] + argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="image_size=32"):
        load_dataset("cifar10", image_size=32)


# -- the preprocessing --------------------------------------------------------

def _known_image(height, width):
    rng = np.random.default_rng(1)
    return rng.uniform(0.05, 0.95, (height, width, 3)).astype("float32")


def _direct_colour(crop, brightness, hue, saturation, contrast):
    """Appendix A.2's colour steps written out with `colorsys`."""
    x = np.clip(crop + brightness, 0.0, 1.0)
    out = np.empty_like(x)
    for i, j in np.ndindex(x.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*x[i, j])
        out[i, j] = colorsys.hsv_to_rgb((h + hue) % 1.0, s, v)
    for i, j in np.ndindex(x.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*out[i, j])
        out[i, j] = colorsys.hsv_to_rgb(h, min(1.0, s * saturation), v)
    mean = out.mean(axis=(0, 1))
    return np.clip((out - mean) * contrast + mean, 0.0, 1.0)


def test_sizes_scale_from_the_papers_256_384_224():
    assert prep.resize_range(224) == (256, 384) and prep.eval_resize(224) == 256
    assert prep.resize_range(16) == (18, 27)
    assert [int(v) for v in prep.resized_shape(375, 500, 256)] == [256, 341]
    assert [int(v) for v in prep.resized_shape(500, 333, 384)] == [577, 384]
    with pytest.raises(ValueError, match="image_size=4"):
        prep.resize_range(4)


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_against_a_direct_computation(flip):
    # A draw whose resize keeps the image's size (an exact copy), so every
    # later step can be computed by hand on the known pixels.
    image = _known_image(18, 27)
    draws = {"height": tf.constant(18), "width": tf.constant(27),
             "top": tf.constant(3), "left": tf.constant(7),
             "flip": tf.constant(flip), "brightness": tf.constant(0.1),
             "hue": tf.constant(-0.07), "saturation": tf.constant(1.3),
             "contrast": tf.constant(0.7)}
    crop = image[3:17, 7:21]
    crop = crop[:, ::-1] if flip else crop
    np.testing.assert_array_equal(
        prep.augment_image(image, draws, 14, color=False), crop)
    expected = _direct_colour(crop, 0.1, -0.07, 1.3, 0.7)
    np.testing.assert_allclose(prep.augment_image(image, draws, 14), expected,
                               atol=2e-6)


def test_draws_of_a_seed_are_reproducible_in_range_and_applied():
    image = _known_image(30, 45)
    draws = prep.draw_augmentation((3, 4), 30, 45, image_size=14)
    again = prep.draw_augmentation((3, 4), 30, 45, image_size=14)
    assert {k: v.numpy().item() for k, v in draws.items()} == {
        k: v.numpy().item() for k, v in again.items()}
    short = int(draws["short_side"])
    assert 16 <= short <= 24
    assert (int(draws["height"]), int(draws["width"])) == (
        short, round(45 * short / 30))
    # train_image = normalise(augment_image(draws of the seed)).
    expected = ((prep.augment_image(image, draws, 14) - np.array(prep.MEAN))
                / np.array(prep.STD))
    np.testing.assert_allclose(prep.train_image(image, tf.constant([3, 4]), 14),
                               expected, atol=1e-5)
    # The draws over 400 seeds cover the paper's ranges and nothing else.
    many = [prep.draw_augmentation((s, 0), 30, 45, image_size=14) for s in range(400)]
    values = {k: np.array([d[k].numpy() for d in many]) for k in many[0]}
    assert set(values["short_side"]) == set(range(16, 25))
    assert values["top"].min() == 0 and np.all(values["top"] <= values["height"] - 14)
    assert np.all(values["left"] <= values["width"] - 14)
    assert 0.4 < values["flip"].mean() < 0.6
    for name, (low, high) in (
            ("brightness", (-32 / 255, 32 / 255)), ("hue", (-0.1, 0.1)),
            ("saturation", (0.6, 1.4)), ("contrast", (0.6, 1.4))):
        span = high - low
        assert low <= values[name].min() < low + 0.02 * span, name
        assert high - 0.02 * span < values[name].max() < high, name


def test_evaluation_view_is_the_central_crop_of_the_resized_image():
    image = _known_image(18, 27)  # shorter side already eval_resize(16) = 18
    np.testing.assert_array_equal(prep.center_crop(image, 16), image[1:17, 5:21])
    np.testing.assert_allclose(
        prep.eval_image(image, 16),
        (image[1:17, 5:21] - np.array(prep.MEAN)) / np.array(prep.STD), atol=1e-6)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype("uint8")
    np.testing.assert_allclose(prep.decode(tf.io.encode_png(pixels)), pixels / 255,
                               atol=1e-7)


# -- the model ----------------------------------------------------------------

def test_resnet50_has_zero_last_gammas_and_a_regularised_head_bias():
    model = get_model("imagenet-resnet50", (32, 32, 3), 1000, weight_decay=1e-4)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 25_557_032
    bn3 = [l for l in model.layers if l.name.endswith("_bn3")]
    assert len(bn3) == 16
    assert all(not np.any(l.gamma.numpy()) for l in bn3)
    others = [l for l in model.layers
              if isinstance(l, keras.layers.BatchNormalization) and l not in bn3]
    assert len(others) == 37 and all(np.all(l.gamma.numpy() == 1) for l in others)
    # A block starts as the identity: its residual branch ends in gamma = 0.
    probe = keras.Model(model.input, [model.get_layer("stage1_block1_out").output,
                                      model.get_layer("stage1_block2_out").output])
    before, after = probe(np.random.default_rng(0).normal(size=(2, 32, 32, 3)))
    np.testing.assert_array_equal(before, after)
    # L2(1e-4 / 2) on every kernel and on the logits' bias, not on BN.
    logits = model.get_layer("logits")
    logits.bias.assign(np.ones(1000, "float32"))
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    assert len(kernels) == 54 and len(model.losses) == 55
    expected = 0.5e-4 * (sum(float(np.sum(w.numpy() ** 2)) for w in kernels) + 1000)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert get_model("imagenet-resnet50", (32, 32, 3), 10).losses == []


def test_resnet50_names_and_options():
    assert is_model_name("imagenet-resnet50")
    assert get_model("resnet50", (32, 32, 3), 10).name == "resnet50"  # CIFAR
    model = imagenet_resnet50((32, 32, 3), 10, zero_init_residual=False)
    assert float(model.get_layer("stage4_block3_bn3").gamma.numpy().min()) == 1.0
    with pytest.raises(ValueError, match="zero_init_residual=1"):
        imagenet_resnet50((32, 32, 3), 10, zero_init_residual=1)
    assert RunConfig(dataset="imagenet").resolved().model == "imagenet-resnet50"
