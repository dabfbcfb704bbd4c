"""`ImageNetData`: ImageNet streamed from its files, with its pipelines.

ImageNet does not fit in memory as arrays (an `ImageData`), so its splits
are `keras_lrphase.data.encoded_records` sources and the training runner
asks this object for its `tf.data` pipelines: images are decoded, resized,
cropped and jittered one by one (`keras_lrphase.data.imagenet_preprocessing`)
and batched afterwards.
"""

import dataclasses

import numpy as np

from keras_lrphase.data.imagenet_preprocessing import AUGMENT_MODES
from keras_lrphase.data.imagenet_preprocessing import IMAGE_SIZE
from keras_lrphase.data.imagenet_preprocessing import check_image_size
from keras_lrphase.data.imagenet_preprocessing import decode
from keras_lrphase.data.imagenet_preprocessing import eval_image
from keras_lrphase.data.imagenet_preprocessing import train_image
from keras_lrphase.data.pipeline import check_batching
from keras_lrphase.data.pipeline import steps_per_epoch


@dataclasses.dataclass(frozen=True)
class ImageNetData:
    """An image classification dataset streamed from encoded images.

    It offers what the runner reads of an `ImageData` (`name`,
    `class_names`, `input_shape`, `num_classes`, `train_examples`,
    `test_examples`, `augment`, `source`, `subset`) plus the pipelines,
    which `ImageData` leaves to `keras_lrphase.data.pipeline`.

    Attributes:
        name: String. `"imagenet"`.
        train: `FileRecords` or `TfdsRecords`. The training split.
        test: `FileRecords` or `TfdsRecords`. The evaluation split.
        class_names: Tuple of strings (WordNet ids for ImageNet).
        image_size: Int. Side of the square crops. Defaults to `224`.
        augment: String. The training augmentation the dataset calls for:
            `"crop-flip-color"`, the paper's (see
            `keras_lrphase.data.imagenet_preprocessing`).
        source: String. The folder, or `"tfds:imagenet2012"`.

    Example:

    >>> import numpy as np
    >>> from keras_lrphase.data.encoded_records import FileRecords
    >>> split = FileRecords(np.array(["a.jpg", "b.jpg"]), np.array([0, 1], "int32"))
    >>> data = ImageNetData("imagenet", split, split, ("a", "b"), image_size=32)
    >>> data.input_shape, data.train_examples, data.num_classes
    ((32, 32, 3), 2, 2)

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Appendix A.2 (the ImageNet preprocessing).
    """

    name: str
    train: object
    test: object
    class_names: tuple
    image_size: int = IMAGE_SIZE
    augment: str = "crop-flip-color"
    source: str = ""

    def __post_init__(self):
        check_image_size(self.image_size)
        for split in ("train", "test"):
            if len(getattr(self, split)) == 0:
                raise ValueError(f"Argument `{split}` has no examples.")

    @property
    def input_shape(self):
        """Shape of one preprocessed image, `(image_size, image_size, 3)`."""
        return (self.image_size, self.image_size, 3)

    @property
    def num_classes(self):
        """Number of classes."""
        return len(self.class_names)

    @property
    def train_examples(self):
        """Number of training examples."""
        return len(self.train)

    @property
    def test_examples(self):
        """Number of evaluation examples."""
        return len(self.test)

    def subset(self, train_size=None, test_size=None, seed=0):
        """A copy restricted to subsets of each split (see the sources'
        `subset`: class-balanced and random for files, the first examples
        for TFDS)."""
        rng = np.random.default_rng(seed)
        train, test = self.train, self.test
        if train_size is not None:
            train = train.subset(train_size, self.num_classes, rng, "train_size")
        if test_size is not None:
            test = test.subset(test_size, self.num_classes, rng, "test_size")
        return dataclasses.replace(self, train=train, test=test)

    def train_dataset(self, batch_size, augment=None, accumulate=1, seed=None):
        """The training pipeline: shuffle, decode, augment, batch, prefetch.

        Like `keras_lrphase.data.train_dataset`: sub-batches of
        `batch_size // accumulate` examples, `accumulate` per optimizer step
        and `steps_per_epoch(train_examples, batch_size)` steps per pass,
        a new order and new augmentation draws every pass (the same ones
        for the same `seed`).

        Args:
            batch_size: Int. Examples per optimizer step.
            augment: One of `AUGMENT_MODES` or None (`self.augment`).
            accumulate: Int. Sub-batches per optimizer step. Defaults to `1`.
            seed: Int or None. Shuffle and augmentation seed.

        Returns:
            A `tf.data.Dataset` of `(images, labels)` (`float32`, `int32`).
        """
        import tensorflow as tf

        augment = self.augment if augment is None else augment
        accumulate = check_batching(augment, batch_size, accumulate,
                                    modes=AUGMENT_MODES)
        steps = steps_per_epoch(self.train_examples, batch_size)
        size = self.image_size

        def prepare(record, image_seed):
            encoded, label = record
            return train_image(decode(encoded), image_seed, size, augment), label

        # One stateless seed per image, new every pass: the parallel map
        # gives the same augmentation whichever thread runs an image.
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(
            (self.train.dataset(shuffle=True, seed=seed), seeds))
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size // accumulate, drop_remainder=True)
        return ds.take(steps * accumulate).prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, batch_size):
        """The evaluation pipeline: decode, center crop, batch, in order."""
        import tensorflow as tf

        return self._eval_images(self.test.dataset()).batch(
            int(batch_size)).prefetch(tf.data.AUTOTUNE)

    def hessian_batch(self, size, seed=0):
        """A fixed random batch of `size` training images, evaluation view.

        The one large batch on which the Hessian eigenvalue is estimated
        (un-augmented, like `keras_lrphase.data.normalized_batch`).

        Returns:
            A tuple `(x, y)` of NumPy arrays (`float32`, `int32`).
        """
        size = int(size)
        if not 0 < size <= self.train_examples:
            raise ValueError(
                f"Argument `size` must be in [1, {self.train_examples}] (the "
                f"number of examples). Received: size={size}"
            )
        ds = self._eval_images(self.train.sample(size, seed)).batch(size)
        x, y = next(iter(ds))
        return np.asarray(x, "float32"), np.asarray(y, "int32")

    def _eval_images(self, records):
        import tensorflow as tf

        size = self.image_size
        return records.map(
            lambda encoded, label: (eval_image(decode(encoded), size), label),
            num_parallel_calls=tf.data.AUTOTUNE)
