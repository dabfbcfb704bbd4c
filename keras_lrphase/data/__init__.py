"""Datasets and input pipelines of the paper's experiments.

`load_dataset(name, data_dir)` understands:

* `digits`: scikit-learn's bundled 8x8 digits (no download; the demo's data);
* `cifar10`, `cifar100`, `svhn`: from a local image folder when `data_dir`
  has `train/` and `test/` subfolders (how the JPEG copy of CIFAR-10 is
  read), else through tensorflow-datasets (`data_dir` = TFDS data folder);
* `folder`: any local image folder (`data_dir` required), no augmentation;
* `imagenet`: ImageNet streamed from an image folder (`train/` and `val/`)
  or prepared TFDS `imagenet2012` (`keras_lrphase.data.imagenet`): an
  `ImageNetData`, not held in memory.

The Keras input pipelines (`TrainBatches`, `DeviceTrainBatches`) are
imported on first use (PEP 562): the names and checks the command line
needs (`DATASET_NAMES`, `check_dataset`) load without Keras.
"""

import importlib
import os

from keras_lrphase._validation import check_existing_folder
from keras_lrphase.data.digits import load_digits_data
from keras_lrphase.data.class_subset import select_classes
from keras_lrphase.data.image_data import ImageData
from keras_lrphase.data.image_folder import default_cache_dir
from keras_lrphase.data.image_folder import is_image_folder
from keras_lrphase.data.image_folder import load_image_folder
from keras_lrphase.data.image_folder import scan_image_folder
from keras_lrphase.data.imagenet import check_imagenet
from keras_lrphase.data.imagenet import load_imagenet
from keras_lrphase.data.imagenet_data import ImageNetData
from keras_lrphase.data.imagenet_preprocessing import IMAGE_SIZE
from keras_lrphase.data.pipeline import channel_stats
from keras_lrphase.data.pipeline import eval_dataset
from keras_lrphase.data.pipeline import normalize_array
from keras_lrphase.data.pipeline import normalized_batch
from keras_lrphase.data.pipeline import random_crop_flip
from keras_lrphase.data.pipeline import steps_per_epoch
from keras_lrphase.data.pipeline import train_dataset
from keras_lrphase.data.tfds_loader import TFDS_DATASETS
from keras_lrphase.data.tfds_loader import check_tfds_dir
from keras_lrphase.data.tfds_loader import load_tfds

# Imported on first use: these import Keras.
_KERAS_NAMES = {
    "TrainBatches": "keras_lrphase.data.array_pipeline",
    "crop_flip_draws": "keras_lrphase.data.array_pipeline",
    "random_crop_flip_array": "keras_lrphase.data.array_pipeline",
    "DeviceTrainBatches": "keras_lrphase.data.device_pipeline",
}


def __getattr__(name):
    if name not in _KERAS_NAMES:
        raise AttributeError(
            f"module 'keras_lrphase.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_KERAS_NAMES[name]), name)
    globals()[name] = value
    return value


DATASET_NAMES = ("digits", "cifar10", "cifar100", "svhn", "folder", "imagenet")
_NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}

def check_dataset(name, data_dir=None):
    """Rejects a bad dataset name or data folder cheaply, before any decoding.

    Args:
        name: String. One of `DATASET_NAMES`.
        data_dir: String or `None`. See `load_dataset`.

    Raises:
        ValueError: With a one-line message naming the argument and value.
    """
    if name not in DATASET_NAMES:
        raise ValueError(
            f"Argument `dataset` must be one of {', '.join(DATASET_NAMES)}. "
            f"Received: dataset={name!r}"
        )
    if name == "digits":
        if data_dir is not None:
            raise ValueError(
                "Argument `data_dir` is not used by the embedded digits "
                f"dataset. Received: data_dir={data_dir!r}"
            )
        return
    if name == "imagenet":
        check_imagenet(data_dir)
        return
    if data_dir is None:
        if name == "folder":
            raise ValueError(
                "Argument `data_dir` is required for dataset='folder'. "
                "Received: data_dir=None"
            )
        return
    check_existing_folder("data_dir", data_dir)
    if name == "folder" or is_image_folder(data_dir):
        class_names, _ = scan_image_folder(data_dir)
        expected = _NUM_CLASSES.get(name)
        if expected is not None and len(class_names) != expected:
            raise ValueError(
                f"Dataset {name!r} has {expected} classes, but the folder has "
                f"{len(class_names)} class folders. Received: "
                f"data_dir={data_dir!r}"
            )
        return
    check_tfds_dir(name, data_dir)

def load_dataset(name, data_dir=None, cache_dir=None, verbose=0,
                 image_size=None):
    """Loads dataset `name` into an `ImageData` (ImageNet: `ImageNetData`).

    Args:
        name: String. One of `DATASET_NAMES`.
        data_dir: String or `None`. For CIFAR/SVHN: an image folder with
            `train/` and `test/`, or a prepared TFDS data folder; required
            for `folder`; must be `None` for `digits`. Defaults to `None`.
        cache_dir: String or `None`. Cache of decoded image folders.
            Defaults to `None` (`default_cache_dir()`).
        verbose: Int. `1` reports decoding. Defaults to `0`.
        image_size: Int or `None`. ImageNet only: side of the square crops;
            `None` is 224. Defaults to `None`.

    Returns:
        An `ImageData`, or an `ImageNetData` for `imagenet`.

    Example:

    >>> load_dataset("digits").input_shape
    (8, 8, 1)
    """
    check_dataset(name, data_dir)
    if image_size is not None and name != "imagenet":
        raise ValueError(
            "Argument `image_size` is only used by dataset='imagenet'. "
            f"Received: image_size={image_size!r}"
        )
    if name == "imagenet":
        return load_imagenet(data_dir, image_size=image_size or IMAGE_SIZE)
    if name == "digits":
        return load_digits_data()
    if name == "folder" or (data_dir is not None and is_image_folder(data_dir)):
        augment = TFDS_DATASETS[name][3] if name in TFDS_DATASETS else "none"
        return load_image_folder(
            data_dir, name=name if name != "folder" else None,
            augment=augment, cache_dir=cache_dir, verbose=verbose)
    return load_tfds(name, data_dir)

__all__ = [
    "DATASET_NAMES", "DeviceTrainBatches", "ImageData", "ImageNetData",
    "TrainBatches", "channel_stats",
    "check_dataset", "default_cache_dir", "eval_dataset", "load_dataset",
    "load_digits_data", "load_image_folder", "load_imagenet", "load_tfds",
    "normalized_batch", "random_crop_flip", "scan_image_folder", "select_classes", "steps_per_epoch", "train_dataset",
]
