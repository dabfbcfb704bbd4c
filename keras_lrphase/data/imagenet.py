"""Finds ImageNet (ILSVRC2012) where the user keeps it; never downloads.

Two layouts are read:

* an image folder: `DIR/train/<class>/*.JPEG` and `DIR/val/<class>/*.JPEG`
  (or `DIR/test/<class>/`), one folder per class (the WordNet ids, such as
  `n01440764`), the same class folders in both; the validation images of
  the official archive lie in one flat folder and must be sorted into
  class folders first;
* a TFDS data folder holding a prepared `imagenet2012/` (TFDS builds it
  from the two archives downloaded by hand from image-net.org, with
  `tfds build imagenet2012 --manual_dir ARCHIVES --data_dir DIR`).

Both give an `ImageNetData` that streams the images (nothing is decoded
up front); class indices follow the sorted class folder names, which is
also TFDS's label order.
"""

import os

import numpy as np

from keras_lrphase._validation import check_existing_folder
from keras_lrphase.data.encoded_records import FileRecords
from keras_lrphase.data.encoded_records import TfdsRecords
from keras_lrphase.data.image_folder import class_folder_names
from keras_lrphase.data.image_folder import class_images
from keras_lrphase.data.imagenet_data import ImageNetData
from keras_lrphase.data.imagenet_preprocessing import IMAGE_SIZE

TFDS_BUILDER = "imagenet2012"
TFDS_SPLITS = ("train", "validation")
EVAL_FOLDERS = ("val", "test")


def missing_data_message(where):
    """The one message for ImageNet that is not at `where`."""
    return (
        f"The ImageNet data is not in {where}, and keras-lrphase does not "
        "download it. Pass --data-dir with a folder holding train/ and val/ "
        "(one subfolder of images per class, e.g. train/n01440764/), or a "
        f"TFDS data folder holding a prepared {TFDS_BUILDER}/ (download "
        "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
        "image-net.org, then `tfds build imagenet2012 --manual_dir "
        "ARCHIVES --data_dir DIR`)."
    )


def eval_folder(data_dir):
    """The evaluation subfolder name (`"val"` or `"test"`), or None."""
    for name in EVAL_FOLDERS:
        if os.path.isdir(os.path.join(data_dir, name)):
            return name
    return None


def is_imagenet_folder(data_dir):
    """Whether `data_dir` has `train/` and `val/` (or `test/`) subfolders."""
    return (os.path.isdir(os.path.join(data_dir, "train"))
            and eval_folder(data_dir) is not None)


def check_imagenet(data_dir):
    """Rejects a `data_dir` that holds no ImageNet, cheaply (no file listing).

    Args:
        data_dir: String or None. None: TFDS's default folder, checked when
            the data is read.

    Raises:
        ValueError: Naming `data_dir`, and saying how to get the data.
    """
    if data_dir is None:
        return
    check_existing_folder("data_dir", data_dir)
    if is_imagenet_folder(data_dir):
        _class_folders(data_dir)
        return
    if not os.path.isdir(os.path.join(data_dir, TFDS_BUILDER)):
        raise ValueError(
            missing_data_message(repr(data_dir))
            + f" Received: data_dir={data_dir!r}")


def _class_folders(data_dir):
    """The sorted class folder names, the same in train/ and val/ (test/)."""
    evaluation = eval_folder(data_dir)
    classes = {split: class_folder_names(os.path.join(data_dir, split))
               for split in ("train", evaluation)}
    if not classes["train"]:
        raise ValueError(
            "Argument `data_dir` must contain one subfolder per class in "
            f"train/; none found. Received: data_dir={data_dir!r}"
        )
    if not classes[evaluation]:
        raise ValueError(
            f"The {evaluation}/ folder of `data_dir` has no class folders: "
            "sort the validation images into one folder per class (the "
            "labels are in the ILSVRC2012 devkit), or use a TFDS data "
            f"folder. Received: data_dir={data_dir!r}"
        )
    if classes["train"] != classes[evaluation]:
        only = sorted(set(classes["train"]) ^ set(classes[evaluation]))
        raise ValueError(
            f"The class folders of train/ and {evaluation}/ differ (e.g. "
            f"{only[:3]}). Received: data_dir={data_dir!r}"
        )
    return tuple(classes["train"])


def scan_imagenet_folder(data_dir):
    """Lists the images of an ImageNet folder (no decoding).

    Returns:
        A tuple `(class_names, train, test)`: the sorted class folder
        names and a `FileRecords` per split.
    """
    class_names = _class_folders(data_dir)
    splits = []
    for split in ("train", eval_folder(data_dir)):
        paths, labels = [], []
        for label, name in enumerate(class_names):
            images = class_images(os.path.join(data_dir, split, name))
            paths += images
            labels += [label] * len(images)
        splits.append(FileRecords(np.array(paths), np.array(labels, "int32")))
    return (class_names, *splits)


def load_imagenet(data_dir=None, image_size=IMAGE_SIZE):
    """ImageNet from an image folder or prepared TFDS data, streamed.

    Args:
        data_dir: String or None. An ImageNet folder (`train/`, `val/` or
            `test/`) or a TFDS data folder; None: TFDS's default folder
            (`~/tensorflow_datasets`). Defaults to `None`.
        image_size: Int. Side of the square crops. Defaults to `224`.

    Returns:
        An `ImageNetData`.

    Raises:
        ValueError: When the data is not there (the message says how to
            get it; nothing is downloaded).

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     data = load_imagenet(image_size=32)
    >>> data.num_classes, data.train_examples, data.source
    (1000, 4, 'tfds:imagenet2012')

    References:
        Russakovsky et al., "ImageNet Large Scale Visual Recognition
        Challenge", IJCV 2015.
    """
    check_imagenet(data_dir)
    if data_dir is not None and is_imagenet_folder(data_dir):
        class_names, train, test = scan_imagenet_folder(data_dir)
        return ImageNetData("imagenet", train, test, class_names,
                            image_size=image_size,
                            source=os.path.abspath(data_dir))
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            "Loading ImageNet from TFDS needs tensorflow-datasets: "
            "pip install 'keras-lrphase[tfds]' (or pass --data-dir with an "
            "image folder)") from None
    counts = []
    for split in TFDS_SPLITS:
        try:
            ds = tfds.load(TFDS_BUILDER, split=split, data_dir=data_dir,
                           download=False,
                           decoders={"image": tfds.decode.SkipDecoding()})
        except AssertionError:
            where = repr(data_dir) if data_dir else (
                "the default TFDS folder (~/tensorflow_datasets)")
            raise ValueError(missing_data_message(where)) from None
        counts.append(int(ds.cardinality()))
    builder = tfds.builder(TFDS_BUILDER, data_dir=data_dir)
    if min(counts) < 0:  # unknown cardinality: the split's recorded size
        counts = [builder.info.splits[s].num_examples for s in TFDS_SPLITS]
    train, test = (TfdsRecords(TFDS_BUILDER, split, data_dir, count)
                   for split, count in zip(TFDS_SPLITS, counts))
    return ImageNetData("imagenet", train, test,
                        tuple(builder.info.features["label"].names),
                        image_size=image_size, source=f"tfds:{TFDS_BUILDER}")
