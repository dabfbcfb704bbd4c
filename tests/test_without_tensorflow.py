"""The CLI and its data path without TensorFlow (Pillow decoding, NumPy batches)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_lrphase.data.image_folder import _decode_with_pillow
from keras_lrphase.data.image_folder import _decode_with_tensorflow
from keras_lrphase.training.epoch_recorder import EpochRecorder

HERE = os.path.dirname(os.path.abspath(__file__))


def _png_folder(root, size=(8, 8), channels=3):
    rng = np.random.default_rng(0)
    files = []
    for split, count in (("train", 8), ("test", 3)):
        for label, name in enumerate(("a", "b", "c")):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(count):
                image = rng.integers(0, 60, size + (channels,)).astype("uint8")
                image[..., label % channels] += 150
                path = os.path.join(folder, f"{i}.png")
                with open(path, "wb") as f:
                    f.write(tf.io.encode_png(image).numpy())
                files.append((path, label))
    return files


@pytest.mark.parametrize("channels", [1, 3])
def test_pillow_decodes_the_same_pixels_as_tensorflow(tmp_path, channels):
    files = _png_folder(str(tmp_path / "imgs"), channels=channels)
    pillow = _decode_with_pillow([p for p, _ in files])
    np.testing.assert_array_equal(pillow, _decode_with_tensorflow(files))
    assert pillow.shape == (len(files), 8, 8, channels)


def test_pillow_names_the_file_it_cannot_decode_or_whose_shape_differs(tmp_path):
    files = _png_folder(str(tmp_path / "imgs"))
    paths = [p for p, _ in files]
    with open(paths[4], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ValueError, match=f"Could not decode the image '{paths[4]}'"):
        _decode_with_pillow(paths)
    with open(paths[4], "wb") as f:
        f.write(tf.io.encode_png(np.zeros((6, 8, 3), "uint8")).numpy())
    with pytest.raises(ValueError, match=r"most are \(8, 8, 3\), but "
                                         f"'{paths[4]}' is \\(6, 8, 3\\)"):
        _decode_with_pillow(paths)


def _cli_without_tensorflow(backend, *argv):
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "without_tensorflow.py"), *argv],
        capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.jax
def test_cli_trains_on_jax_without_tensorflow_and_resumes_a_compare(tmp_path):
    pytest.importorskip("jax")
    _png_folder(str(tmp_path / "imgs"))
    out = str(tmp_path / "run")
    result = _cli_without_tensorflow(
        "jax", "train", "--dataset", "folder", "--data-dir", str(tmp_path / "imgs"),
        "--cache-dir", str(tmp_path / "cache"), "--model", "small-cnn",
        "--batch-size", "8", "--epochs", "2", "--augment", "crop-flip",
        "--schedule", "two-phase", "--plateau-patience", "1",
        "--hessian-batch-size", "16", "--verbose", "0", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(pathlib.Path(os.path.join(out, "summary.json")).read_text())
    assert summary["backend"] == "jax" and summary["epochs_completed"] == 2
    assert summary["config"]["pipeline"] == "numpy"
    assert np.isfinite(summary["final_loss"])
    # Asking for tf.data there is refused before any work, naming the option.
    result = _cli_without_tensorflow(
        "jax", "train", "--pipeline", "tf.data", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert ("Argument --pipeline needs TensorFlow (pip install tensorflow), or "
            "use --pipeline='numpy'. Received: --pipeline='tf.data'"
            in result.stderr)
