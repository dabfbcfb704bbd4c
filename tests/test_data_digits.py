import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_lrphase.data.digits import load_digits_data
from keras_lrphase.data.image_data import ImageData

pytestmark = pytest.mark.backend_neutral


def test_digits_split_is_stratified_and_exact():
    data = load_digits_data()
    assert data.x_train.shape == (1438, 8, 8, 1) and data.x_test.shape == (359, 8, 8, 1)
    assert data.x_train.dtype == np.uint8 and data.augment == "crop"
    # round(0.2 * class count) test examples per class.
    counts = np.bincount(load_digits().target)
    assert np.bincount(data.y_test).tolist() == [int(round(0.2 * c)) for c in counts]
    # Pixels are the original 0..16 values times 16 (16 * 16 capped at 255).
    raw = load_digits()
    originals = {tuple(np.minimum(im * 16, 255).astype("uint8").ravel()): t
                 for im, t in zip(raw.images, raw.target)}
    for image, label in zip(data.x_test[:20], data.y_test[:20]):
        assert originals[tuple(image.ravel())] == label
    again = load_digits_data()
    np.testing.assert_array_equal(again.y_train, data.y_train)
    assert not np.array_equal(load_digits_data(seed=1).y_train, data.y_train)


def test_subset_is_class_balanced():
    data = load_digits_data().subset(train_size=100, test_size=30, seed=2)
    assert np.bincount(data.y_train).tolist() == [10] * 10
    assert np.bincount(data.y_test).tolist() == [3] * 10
    with pytest.raises(ValueError, match="train_size=5000"):
        load_digits_data().subset(train_size=5000)


def test_image_data_validation():
    x = np.zeros((2, 4, 4, 1), "uint8")
    with pytest.raises(ValueError, match="y_train.shape"):
        ImageData("t", x, np.zeros(3, "int32"), x, np.zeros(2, "int32"), ("a", "b"))
    with pytest.raises(ValueError, match="Labels must be in"):
        ImageData("t", x, np.array([0, 2]), x, np.zeros(2, "int32"), ("a", "b"))
    with pytest.raises(ValueError, match="test_fraction=1.0"):
        load_digits_data(test_fraction=1.0)
