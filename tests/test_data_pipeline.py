import numpy as np
import pytest
import tensorflow as tf

from keras_lrphase.data.pipeline import channel_stats
from keras_lrphase.data.pipeline import eval_dataset
from keras_lrphase.data.pipeline import normalize
from keras_lrphase.data.pipeline import normalized_batch
from keras_lrphase.data.pipeline import random_crop_flip
from keras_lrphase.data.pipeline import steps_per_epoch
from keras_lrphase.data.pipeline import train_dataset


def _images(n=12, h=6, w=5, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype("uint8")


def test_channel_stats_match_numpy():
    x = _images(5000)  # more than one 4096-image chunk
    mean, std = channel_stats(x)
    ref = x.astype("float64") / 255.0
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, ref.std(axis=(0, 1, 2)), rtol=1e-5)
    assert mean.dtype == std.dtype == np.float32
    # A constant channel gets std 1 instead of a division by zero.
    _, std = channel_stats(np.full((2, 2, 2, 1), 7, "uint8"))
    assert std.tolist() == [1.0]


def test_normalize_uint8_and_float():
    x = _images(3)
    mean, std = np.array([0.1, 0.2, 0.3], "float32"), np.array([0.5, 0.25, 2.0], "float32")
    got = normalize(tf.constant(x), mean, std).numpy()
    np.testing.assert_allclose(got, (x / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
    xf = x.astype("float32") / 255.0
    np.testing.assert_allclose(normalize(tf.constant(xf), mean, std).numpy(), got,
                               rtol=1e-5, atol=1e-6)


def test_random_crop_flip_outputs_are_padded_crops_or_their_mirrors():
    x = np.random.default_rng(1).normal(size=(16, 6, 5, 2)).astype("float32")
    y = random_crop_flip(tf.constant(x), padding=2, seed=(3, 0)).numpy()
    assert y.shape == x.shape
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)])
    flips = set()
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5) for dx in range(5) for flip in (False, True)
            if np.array_equal(
                (padded[i, dy:dy + 6, dx:dx + 5, :][:, ::-1] if flip
                 else padded[i, dy:dy + 6, dx:dx + 5, :]), y[i])
        ]
        assert matches, f"image {i} is not a crop of its padded original"
        flips.add(matches[0][2])
        offsets.add(matches[0][:2])
    # 16 images: both flip states and several offsets occur.
    assert flips == {False, True}
    assert len(offsets) > 3


def test_train_dataset_shapes_steps_and_accumulation():
    x, y = _images(10), np.arange(10) % 3
    ds = train_dataset(x, y, batch_size=4, mean=[0.5] * 3, std=[0.25] * 3,
                       accumulate=2, seed=0)
    batches = list(ds)
    # 10 // 4 = 2 optimizer steps per epoch, 2 sub-batches of 2 each.
    assert [tuple(b[0].shape) for b in batches] == [(2, 6, 5, 3)] * 4
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    # Without augmentation every sub-batch holds normalised originals.
    seen = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    reference = (x / 255.0 - 0.5) / 0.25
    for image, label in zip(seen, labels):
        index = [i for i in range(10) if np.allclose(reference[i], image, atol=1e-5)]
        assert len(index) == 1 and y[index[0]] == label
    # Each epoch reshuffles: 8 distinct examples per pass.
    assert len({tuple(np.round(im.ravel()[:4], 4)) for im in seen}) == 8
    second = np.concatenate([b[0].numpy() for b in ds])
    assert not np.allclose(second, seen)


def test_train_dataset_augmentation_is_reproducible_per_seed():
    x, y = _images(64), np.arange(64) % 3

    def epochs(seed, count=2):
        ds = train_dataset(x, y, batch_size=8, mean=[0.5] * 3,
                           std=[0.25] * 3, augment="crop-flip", seed=seed)
        return [np.concatenate([b[0].numpy() for b in ds]) for _ in range(count)]

    first, again = epochs(7), epochs(7)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    images = tf.constant(x[:4], "float32")
    np.testing.assert_array_equal(random_crop_flip(images, 1, seed=5),
                                  random_crop_flip(images, 1, seed=(5, 0)))
    with pytest.raises(ValueError, match="Argument `seed`"):
        random_crop_flip(images, 1, seed=(1, 2, 3))
    with pytest.raises(ValueError, match="seed=0.5"):
        random_crop_flip(images, 1, seed=0.5)
    # A new epoch reshuffles and re-draws; another seed differs.
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], epochs(8, count=1)[0])
    # Same examples, same order, different crops: the augmentation itself
    # follows the seed, not only the shuffle.
    plain = train_dataset(x, y, 8, [0.5] * 3, [0.25] * 3, seed=7)
    assert not np.array_equal(np.concatenate([b[0].numpy() for b in plain]),
                              first[0])


def test_train_dataset_errors():
    x, y = _images(10), np.zeros(10, "int32")
    with pytest.raises(ValueError, match="batch_size=6, accumulate=4"):
        train_dataset(x, y, 6, [0.0] * 3, [1.0] * 3, accumulate=4)
    with pytest.raises(ValueError, match="batch_size=11"):
        train_dataset(x, y, 11, [0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="augment='mixup'"):
        train_dataset(x, y, 2, [0.0] * 3, [1.0] * 3, augment="mixup")
    assert steps_per_epoch(50000, 8192) == 6
    assert steps_per_epoch(50000, 128) == 390


def test_eval_dataset_keeps_order_and_remainder():
    x, y = _images(7), np.arange(7)
    batches = list(eval_dataset(x, y, 3, [0.0] * 3, [1.0] * 3))
    assert [len(b[1]) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    np.testing.assert_allclose(batches[0][0].numpy(), x[:3] / 255.0, atol=1e-6)


def test_normalized_batch_is_fixed_and_normalised():
    x, y = _images(20), np.arange(20)
    bx, by = normalized_batch(x, y, 8, [0.5] * 3, [0.5] * 3, seed=4)
    bx2, by2 = normalized_batch(x, y, 8, [0.5] * 3, [0.5] * 3, seed=4)
    np.testing.assert_array_equal(by, by2)
    assert len(set(by.tolist())) == 8 and bx.dtype == np.float32
    np.testing.assert_allclose(bx, (x[by] / 255.0 - 0.5) / 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="size=21"):
        normalized_batch(x, y, 21, [0.5] * 3, [0.5] * 3)


def test_crop_without_flip_and_padding_rule():
    from keras_lrphase.data.pipeline import crop_padding

    assert (crop_padding(32, 32), crop_padding(8, 8), crop_padding(64, 48)) == (4, 1, 6)
    x = np.random.default_rng(2).normal(size=(12, 8, 8, 1)).astype("float32")
    y = random_crop_flip(tf.constant(x), padding=1, seed=5, flip=False).numpy()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    for i in range(len(x)):
        assert any(np.array_equal(padded[i, dy:dy + 8, dx:dx + 8], y[i])
                   for dy in range(3) for dx in range(3))


def test_train_dataset_crop_mode_shifts_digits_by_one_pixel():
    x = np.zeros((4, 8, 8, 1), "uint8")
    x[:, 3:5, 3:5, :] = 255  # a 2x2 blob in the middle
    batches = list(train_dataset(x, np.zeros(4, "int32"), 4, [0.0], [1.0],
                                 augment="crop", seed=0))
    for image in batches[0][0].numpy():
        rows, cols = np.nonzero(image[..., 0] > 0.5)
        # The blob moved by at most one pixel in each direction, intact.
        assert len(rows) == 4 and rows.min() in (2, 3, 4) and cols.min() in (2, 3, 4)
