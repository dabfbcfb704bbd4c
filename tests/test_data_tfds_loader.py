import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_lrphase.data import load_dataset
from keras_lrphase.data.tfds_loader import TFDS_DATASETS
from keras_lrphase.data.tfds_loader import load_tfds


@pytest.mark.parametrize("name,classes,augment", [
    ("cifar10", 10, "crop-flip"), ("cifar100", 100, "crop-flip"), ("svhn", 10, "none"),
])
def test_load_tfds_with_mock_data(name, classes, augment):
    with tfds.testing.mock_data(num_examples=6):
        data = load_tfds(name)
    assert data.x_train.shape == (6, 32, 32, 3) and data.x_test.shape == (6, 32, 32, 3)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int32
    assert data.num_classes == classes and data.augment == augment
    assert data.source == f"tfds:{TFDS_DATASETS[name][0]}"
    assert 0 <= data.y_train.min() and data.y_train.max() < classes


def test_load_dataset_without_data_dir_uses_tfds():
    with tfds.testing.mock_data(num_examples=4):
        data = load_dataset("cifar10")
    assert data.source == "tfds:cifar10" and data.x_train.shape[0] == 4


def test_unknown_name_and_bad_tfds_dir(tmp_path):
    with pytest.raises(ValueError, match="name='mnist'"):
        load_tfds("mnist")
    with pytest.raises(ValueError, match="svhn_cropped/"):
        load_tfds("svhn", data_dir=str(tmp_path))


def test_data_that_is_not_there_is_said_without_downloading(tmp_path):
    (tmp_path / "cifar10").mkdir()
    with pytest.raises(ValueError, match="The cifar10 data is not in .* does not download.*tfds build cifar10"):
        load_tfds("cifar10", str(tmp_path))
