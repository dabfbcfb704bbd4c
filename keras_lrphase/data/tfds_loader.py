"""Loads CIFAR-10, CIFAR-100 and SVHN through tensorflow-datasets."""

import os

import numpy as np

from keras_lrphase.data.image_data import ImageData

# name -> (TFDS builder, train split, test split, augmentation)
TFDS_DATASETS = {
    "cifar10": ("cifar10", "train", "test", "crop-flip"),
    "cifar100": ("cifar100", "train", "test", "crop-flip"),
    # The paper trains SVHN on train + extra (604K images), normalised only.
    "svhn": ("svhn_cropped", "train+extra", "test", "none"),
}


def check_tfds_dir(name, data_dir):
    """Checks that `data_dir` holds prepared TFDS data for dataset `name`."""
    builder = TFDS_DATASETS[name][0]
    if not os.path.isdir(os.path.join(data_dir, builder)):
        raise ValueError(
            f"Argument `data_dir` must be a folder of images with train/ and "
            f"test/ subfolders, or a TFDS data folder holding {builder}/. "
            f"Received: data_dir={data_dir!r}"
        )


def load_tfds(name, data_dir=None):
    """Loads a dataset through `tfds.load` into an `ImageData` of `uint8`.

    The data must be prepared already (`tfds build cifar10 --data_dir DIR`
    where there is internet access): nothing is downloaded at run time. In
    tests, wrap the call in `tfds.testing.mock_data`.

    Args:
        name: String. `"cifar10"`, `"cifar100"` or `"svhn"` (TFDS
            `svhn_cropped`, training on `train+extra` as the paper does).
        data_dir: String or `None`. TFDS data folder. Defaults to `None`
            (TFDS's default, `~/tensorflow_datasets`).

    Returns:
        An `ImageData` with `augment="crop-flip"` for CIFAR and `"none"` for
        SVHN.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=8):
    ...     data = load_tfds("cifar10")
    >>> data.x_train.shape, data.num_classes
    ((8, 32, 32, 3), 10)

    References:
        Krizhevsky (2009), CIFAR-10/100; Netzer et al. (2011), SVHN.
    """
    if name not in TFDS_DATASETS:
        raise ValueError(
            f"Argument `name` must be one of {sorted(TFDS_DATASETS)}. "
            f"Received: name={name!r}"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            f"Loading {name!r} needs tensorflow-datasets: "
            "pip install 'keras-lrphase[tfds]'") from None
    builder, train_split, test_split, augment = TFDS_DATASETS[name]
    if data_dir is not None:
        check_tfds_dir(name, data_dir)
    arrays = {}
    for key, split in (("train", train_split), ("test", test_split)):
        try:
            # Never downloads: the data must be prepared already.
            ds = tfds.load(builder, split=split, as_supervised=True,
                           data_dir=data_dir, shuffle_files=False,
                           download=False)
        except AssertionError:
            where = data_dir or "the default TFDS folder (~/tensorflow_datasets)"
            raise ValueError(
                f"The {name} data is not in {where}, and keras-lrphase does "
                "not download. Pass --data-dir with an image folder (train/ "
                "and test/, one subfolder per class), or a TFDS data folder "
                f"prepared with `tfds build {builder} --data_dir DIR` on a "
                "machine with internet access."
            ) from None
        xs, ys = [], []
        for x, y in tfds.as_numpy(ds.batch(4096)):
            xs.append(x)
            ys.append(y)
        arrays[f"x_{key}"] = np.concatenate(xs).astype("uint8")
        arrays[f"y_{key}"] = np.concatenate(ys).astype("int32")
    info = tfds.builder(builder, data_dir=data_dir).info
    names = tuple(info.features["label"].names)
    return ImageData(name=name, class_names=names, augment=augment,
                     source=f"tfds:{builder}", **arrays)
