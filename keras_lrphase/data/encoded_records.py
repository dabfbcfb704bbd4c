"""Where the encoded images of one split come from: a file list or TFDS.

A dataset too large for memory (ImageNet: 1.28M JPEGs, 140 GB) is streamed:
each split is a sequence of `(encoded image, label)` records that a
`tf.data` pipeline decodes image by image. Two sources give such records:

* `FileRecords`: image files listed once (paths and labels in memory, a
  few tens of MB for ImageNet), read with `tf.io.read_file`;
* `TfdsRecords`: a prepared TFDS split, read without decoding
  (`tfds.decode.SkipDecoding`), so both sources hand the same JPEG bytes to
  the same decoder.
"""

import dataclasses

import numpy as np

from keras_lrphase.data.image_data import balanced_subset

# Shuffle buffer of TFDS records (encoded, about 110 KB each for ImageNet:
# about 1 GB). TFDS also shuffles the order of its files every epoch.
TFDS_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class FileRecords:
    """The image files of one split and their labels.

    Attributes:
        paths: NumPy array of strings. Image file paths.
        labels: `int32` NumPy array of class indices, one per path.

    Example:

    >>> import numpy as np
    >>> records = FileRecords(np.array(["a.jpg", "b.jpg"]), np.array([0, 1], "int32"))
    >>> len(records), len(records.subset(1, 2, np.random.default_rng(0), "train_size"))
    (2, 1)
    """

    paths: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def dataset(self, shuffle=False, seed=None):
        """`(encoded bytes, label)` records, reshuffled every pass if asked."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(
            (np.asarray(self.paths), np.asarray(self.labels, "int32")))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda path, label: (tf.io.read_file(path), label),
                      num_parallel_calls=tf.data.AUTOTUNE)

    def subset(self, size, num_classes, rng, argname):
        """A class-balanced random subset of `size` records."""
        paths, labels = balanced_subset(np.asarray(self.paths), self.labels,
                                        size, num_classes, rng, argname)
        return FileRecords(paths, labels)

    def sample(self, size, seed=0):
        """`size` records drawn at random with `seed`, in file order."""
        index = np.sort(np.random.default_rng(seed).permutation(len(self))[:size])
        return FileRecords(np.asarray(self.paths)[index],
                           self.labels[index]).dataset()


@dataclasses.dataclass(frozen=True)
class TfdsRecords:
    """One prepared TFDS split, read as encoded images.

    Attributes:
        builder: String. TFDS builder name (`"imagenet2012"`).
        split: String. TFDS split (`"train"`, `"validation"`).
        data_dir: String or None. TFDS data folder.
        count: Int. Records used: the split's first `count` (all of it
            unless a subset was taken).
    """

    builder: str
    split: str
    data_dir: str
    count: int

    def __len__(self):
        return self.count

    def dataset(self, shuffle=False, seed=None):
        """`(encoded bytes, label)` records, reshuffled every pass if asked."""
        import tensorflow as tf
        import tensorflow_datasets as tfds

        ds = tfds.load(
            self.builder, split=self.split, data_dir=self.data_dir,
            as_supervised=True, download=False, shuffle_files=shuffle,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed))
        ds = ds.take(self.count)
        if shuffle:
            ds = ds.shuffle(min(self.count, TFDS_SHUFFLE_BUFFER), seed=seed,
                            reshuffle_each_iteration=True)
        return ds.map(lambda image, label: (image, tf.cast(label, "int32")))

    def subset(self, size, num_classes, rng, argname):
        """The split's first `size` records (TFDS stores them shuffled;
        not class-balanced: the labels are not known without reading)."""
        if not 0 < int(size) <= self.count:
            raise ValueError(
                f"Argument `{argname}` must be in [1, {self.count}]. "
                f"Received: {argname}={size}"
            )
        return dataclasses.replace(self, count=int(size))

    def sample(self, size, seed=0):
        """`size` records drawn with `seed` from a shuffle buffer of the
        split's first `4 * size` records."""
        ds = self.dataset()
        return ds.shuffle(min(self.count, 4 * int(size)), seed=seed).take(size)
