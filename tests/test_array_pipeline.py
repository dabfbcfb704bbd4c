import numpy as np
import pytest

from keras_lrphase.data import TrainBatches
from keras_lrphase.data import normalize_array
from keras_lrphase.data import random_crop_flip_array

pytestmark = pytest.mark.backend_neutral


def _direct_crop_flip(images, padding, seed, flip):
    """Image by image, with the draws of `random_crop_flip_array`."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = images.shape
    offsets = rng.integers(0, 2 * padding + 1, size=(2, n))
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    out = []
    for i in range(n):
        padded = np.pad(images[i], [(padding, padding), (padding, padding), (0, 0)])
        crop = padded[offsets[0, i]:offsets[0, i] + h, offsets[1, i]:offsets[1, i] + w]
        out.append(crop[:, ::-1] if mirror[i] else crop)
    return np.stack(out), offsets, mirror


@pytest.mark.parametrize("flip", [False, True])
def test_random_crop_flip_array_equals_a_per_image_crop(flip):
    images = np.random.default_rng(0).normal(size=(64, 6, 5, 3)).astype("float32")
    got = random_crop_flip_array(images, 2, np.random.default_rng(7), flip=flip)
    want, offsets, mirror = _direct_crop_flip(images, 2, 7, flip)
    np.testing.assert_array_equal(got, want)
    # Every offset and both flip outcomes occur in 64 draws: a real crop.
    assert set(offsets.ravel()) == {0, 1, 2, 3, 4}
    assert mirror.any() == flip and (not flip or not mirror.all())
    assert images.shape == got.shape


def test_normalize_array_matches_the_formula():
    x = np.arange(24, dtype="uint8").reshape(2, 2, 2, 3) * 10
    mean, std = np.array([0.1, 0.2, 0.3]), np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(normalize_array(x, mean, std),
                               (x / 255.0 - mean) / std, rtol=1e-6)
    floats = x.astype("float32") / 255
    np.testing.assert_allclose(normalize_array(floats, mean, std),
                               (floats - mean) / std, rtol=1e-6)


def test_train_batches_cover_each_epoch_and_depend_on_seed_epoch_index_only():
    n = 50
    x = np.repeat(np.arange(n, dtype="uint8")[:, None, None, None], 4, axis=1)
    x = np.repeat(x, 4, axis=2)  # image i is all i: batches name their examples
    y = np.arange(n)
    batches = TrainBatches(x, y, 16, [0.0], [1 / 255], accumulate=2, seed=3)
    assert len(batches) == 3 * 2  # 3 full steps of 16, each 2 sub-batches
    seen = [batches[i][1] for i in range(len(batches))]
    assert all(s.shape == (8,) for s in seen)
    ids = np.concatenate(seen)
    assert len(set(ids)) == 48  # no example twice in an epoch, 2 dropped
    # Images and labels stay paired (no augmentation: pixels are the index).
    images, labels = batches[1]
    np.testing.assert_allclose(images[:, 0, 0, 0], labels, rtol=1e-6)
    # Order of access does not matter; epochs differ; a fresh object agrees.
    again = TrainBatches(x, y, 16, [0.0], [1 / 255], accumulate=2, seed=3)
    np.testing.assert_array_equal(again[4][1], seen[4])
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][1], seen[0])
    other = TrainBatches(x, y, 16, [0.0], [1 / 255], accumulate=2, seed=3,
                         initial_epoch=1)
    np.testing.assert_array_equal(other[0][1], batches[0][1])


def test_train_batches_augment_with_the_per_batch_generator():
    x = np.random.default_rng(1).integers(0, 256, size=(40, 8, 8, 3)).astype("uint8")
    y = np.zeros(40, "int32")
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    batches = TrainBatches(x, y, 10, mean, std, augment="crop-flip", seed=5)
    batches.epoch = 2
    images, _ = batches[3]
    order = np.random.default_rng((5, 2)).permutation(40)
    chosen = np.sort(order[30:40])
    want = random_crop_flip_array(normalize_array(x[chosen], mean, std), 1,
                                  np.random.default_rng((5, 2, 3)), flip=True)
    np.testing.assert_array_equal(images, want)


def test_train_batches_reject_bad_arguments():
    x, y = np.zeros((8, 4, 4, 1), "uint8"), np.zeros(8)
    with pytest.raises(ValueError, match="augment='flip'"):
        TrainBatches(x, y, 4, [0.0], [1.0], augment="flip")
    with pytest.raises(ValueError, match="batch_size=4, accumulate=3"):
        TrainBatches(x, y, 4, [0.0], [1.0], accumulate=3)
    with pytest.raises(ValueError, match="batch_size=9"):
        TrainBatches(x, y, 9, [0.0], [1.0])
