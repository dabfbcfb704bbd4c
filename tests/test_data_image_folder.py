import os

import numpy as np
import pytest
import tensorflow as tf

from keras_lrphase.data import check_dataset
from keras_lrphase.data import load_dataset
from keras_lrphase.data.image_folder import cache_key
from keras_lrphase.data.image_folder import load_image_folder
from keras_lrphase.data.image_folder import scan_image_folder


def _write_folder(root, classes=("cat", "dog", "emu"), per_class=(3, 2), size=(4, 5)):
    """Writes PNGs whose pixels encode (split, class, index) exactly."""
    expected = {}
    for s, split in enumerate(("train", "test")):
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(per_class[s]):
                image = np.zeros(size + (3,), "uint8")
                image[..., 0] = 10 * s + label
                image[..., 1] = i
                image[0, 0, 2] = 200
                with open(os.path.join(folder, f"{i:04d}.png"), "wb") as f:
                    f.write(tf.io.encode_png(image).numpy())
                images.append(image)
                labels.append(label)
        expected[split] = (np.stack(images), np.array(labels))
    # A non-image file is ignored.
    with open(os.path.join(root, "train", classes[0], "notes.txt"), "w") as f:
        f.write("x")
    return expected


def test_load_image_folder_decodes_in_label_order_and_caches(tmp_path):
    expected = _write_folder(str(tmp_path / "imgs"))
    cache = str(tmp_path / "cache")
    data = load_image_folder(str(tmp_path / "imgs"), cache_dir=cache)
    assert data.class_names == ("cat", "dog", "emu")
    assert data.name == "imgs" and data.augment == "none"
    np.testing.assert_array_equal(data.x_train, expected["train"][0])
    np.testing.assert_array_equal(data.y_train, expected["train"][1])
    np.testing.assert_array_equal(data.x_test, expected["test"][0])
    np.testing.assert_array_equal(data.y_test, expected["test"][1])
    assert data.x_train.dtype == np.uint8 and data.input_shape == (4, 5, 3)
    files = os.listdir(cache)
    assert files == [f"imgs-{cache_key(str(tmp_path / 'imgs'))}.npz"]
    # The second load reads the cache: prove it by altering the cached arrays.
    path = os.path.join(cache, files[0])
    with np.load(path) as cached:
        arrays = dict(cached)
    arrays["y_train"] = arrays["y_train"][::-1].copy()
    np.savez(path, **arrays)
    again = load_image_folder(str(tmp_path / "imgs"), cache_dir=cache)
    np.testing.assert_array_equal(again.y_train, expected["train"][1][::-1])


def test_cache_key_changes_when_a_class_folder_changes(tmp_path):
    root = str(tmp_path / "imgs")
    _write_folder(root)
    key = cache_key(root)
    assert cache_key(root) == key
    png = tf.io.encode_png(np.zeros((4, 5, 3), "uint8")).numpy()
    with open(os.path.join(root, "test", "dog", "extra.png"), "wb") as f:
        f.write(png)
    assert cache_key(root) != key
    data = load_image_folder(root, cache_dir=str(tmp_path / "cache"))
    assert len(data.y_test) == 7


def test_an_image_overwritten_in_place_is_decoded_again(tmp_path):
    """Found in use: the cache served the old pixels of a replaced file."""
    root = str(tmp_path / "imgs")
    _write_folder(root)
    cache = str(tmp_path / "cache")
    before = load_image_folder(root, cache_dir=cache)
    path = os.path.join(root, "train", "cat", "0001.png")
    stat = os.stat(path)
    image = np.full((4, 5, 3), 77, "uint8")
    with open(path, "wb") as f:  # same name, same folder, same count
        f.write(tf.io.encode_png(image).numpy())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    after = load_image_folder(root, cache_dir=cache)
    np.testing.assert_array_equal(after.x_train[1], image)
    assert not np.array_equal(before.x_train[1], after.x_train[1])


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 truncated", b"not an image"])
def test_a_broken_image_is_named(tmp_path, content):
    root = str(tmp_path / "imgs")
    _write_folder(root)
    broken = os.path.join(root, "train", "dog", "0001.png")
    with open(broken, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=f"Could not decode the image '{broken}'"):
        load_image_folder(root, cache_dir=str(tmp_path / "cache"))


def test_an_odd_image_size_is_blamed_on_the_odd_image_even_when_first(tmp_path):
    root = str(tmp_path / "imgs")
    _write_folder(root)
    odd = os.path.join(root, "train", "cat", "0000.png")  # decoded first
    with open(odd, "wb") as f:
        f.write(tf.io.encode_png(np.zeros((7, 7, 3), "uint8")).numpy())
    with pytest.raises(ValueError, match=f"most are \\(4, 5, 3\\), but '{odd}' is \\(7, 7, 3\\)"):
        load_image_folder(root, cache_dir=str(tmp_path / "cache"))


def test_bad_layouts_fail_with_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="existing folder"):
        scan_image_folder(str(tmp_path / "missing"))
    (tmp_path / "a" / "train" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="test/ is missing"):
        scan_image_folder(str(tmp_path / "a"))
    (tmp_path / "a" / "test" / "y").mkdir(parents=True)
    with pytest.raises(ValueError, match="class folders of train/ and test/ differ"):
        scan_image_folder(str(tmp_path / "a"))
    (tmp_path / "b" / "train" / "x").mkdir(parents=True)
    (tmp_path / "b" / "test" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        scan_image_folder(str(tmp_path / "b"))
    root = str(tmp_path / "c")
    _write_folder(root)
    png = tf.io.encode_png(np.zeros((6, 6, 3), "uint8")).numpy()
    with open(os.path.join(root, "train", "dog", "big.png"), "wb") as f:
        f.write(png)
    with pytest.raises(ValueError, match="big.png"):
        load_image_folder(root, cache_dir=str(tmp_path / "cache"))


def test_dataset_dispatch_and_checks(tmp_path):
    root = str(tmp_path / "imgs")
    _write_folder(root)
    data = load_dataset("folder", root, cache_dir=str(tmp_path / "cache"))
    assert data.augment == "none" and data.num_classes == 3
    with pytest.raises(ValueError, match="has 10 classes, but the folder has 3"):
        check_dataset("cifar10", root)
    with pytest.raises(ValueError, match="dataset='mnist'"):
        check_dataset("mnist")
    with pytest.raises(ValueError, match="required for dataset='folder'"):
        check_dataset("folder")
    with pytest.raises(ValueError, match="not used by the embedded digits"):
        check_dataset("digits", root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="TFDS data folder holding cifar10/"):
        check_dataset("cifar10", str(empty))
    with pytest.raises(ValueError, match="existing folder"):
        check_dataset("svhn", str(tmp_path / "nope"))


def test_ten_class_folder_loads_as_cifar10_with_crop_flip(tmp_path):
    root = str(tmp_path / "c10")
    _write_folder(root, classes=tuple(f"c{i}" for i in range(10)), per_class=(1, 1))
    data = load_dataset("cifar10", root, cache_dir=str(tmp_path / "cache"))
    assert data.name == "cifar10" and data.augment == "crop-flip"
    assert data.y_train.tolist() == list(range(10))


SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                      "cifar10-jpeg.tar.gz")


@pytest.mark.slow
def test_real_cifar10_jpeg_copy(tmp_path):
    if not os.path.exists(SHARED):
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {SHARED}")
    import tarfile
    with tarfile.open(SHARED) as tar:
        tar.extractall(tmp_path)
    data = load_dataset("cifar10", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert data.x_train.shape == (50000, 32, 32, 3)
    assert data.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(data.y_train).tolist() == [5000] * 10
    assert data.class_names[0] == "airplane" and data.class_names[-1] == "truck"
