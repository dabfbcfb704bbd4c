"""`ImageData`: an image classification dataset held in memory."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Train and test splits of an image classification dataset, as arrays.

    Every loader of `keras_lrphase.data` returns one; the input pipelines of
    `keras_lrphase.data.pipeline` turn it into `tf.data` datasets.

    Attributes:
        name: String. Dataset name (`"cifar10"`, `"digits"`, ...).
        x_train: `uint8` or `float32` array `(n, height, width, channels)`.
        y_train: `int32` array `(n,)` of class indices.
        x_test: Array like `x_train`: the evaluation split.
        y_test: `int32` array of class indices of `x_test`.
        class_names: Tuple of strings, one per class, in label order.
        augment: String. The training augmentation the dataset calls for:
            `"crop-flip"` (CIFAR: 4-pixel padded random crops and horizontal
            flips), `"crop"` (crops only, for digits) or `"none"`.
        source: String. Where the arrays came from (a path, `"tfds:NAME"`,
            or `"sklearn.datasets.load_digits"`).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    augment: str = "none"
    source: str = ""

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4:
                raise ValueError(
                    f"Argument `x_{split}` must have shape (n, height, width, "
                    f"channels). Received: x_{split}.shape={x.shape}"
                )
            if y.shape != (x.shape[0],):
                raise ValueError(
                    f"Argument `y_{split}` must have shape ({x.shape[0]},). "
                    f"Received: y_{split}.shape={y.shape}"
                )
            if x.shape[0] == 0:
                raise ValueError(f"Argument `x_{split}` has no examples.")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "Arguments `x_train` and `x_test` must have the same image "
                f"shape. Received: {self.x_train.shape[1:]} and "
                f"{self.x_test.shape[1:]}"
            )
        labels = np.concatenate([self.y_train, self.y_test])
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise ValueError(
                f"Labels must be in [0, {len(self.class_names)}). Received "
                f"labels in [{labels.min()}, {labels.max()}]"
            )
        if self.augment not in ("none", "crop", "crop-flip"):
            raise ValueError(
                "Argument `augment` must be 'none', 'crop' or 'crop-flip'. "
                f"Received: augment={self.augment!r}"
            )

    @property
    def input_shape(self):
        """Shape of one image, `(height, width, channels)`."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        """Number of classes."""
        return len(self.class_names)

    @property
    def train_examples(self):
        """Number of training examples."""
        return len(self.y_train)

    @property
    def test_examples(self):
        """Number of evaluation examples."""
        return len(self.y_test)

    def subset(self, train_size=None, test_size=None, seed=0):
        """A copy restricted to class-balanced random subsets of each split.

        Args:
            train_size: Int or `None`. Training examples to keep (all when
                `None`). Defaults to `None`.
            test_size: Int or `None`. Test examples to keep. Defaults to `None`.
            seed: Int. Seed of the selection. Defaults to `0`.

        Returns:
            An `ImageData` whose splits hold `train_size` and `test_size`
            examples with (as near as divisibility allows) equal counts per
            class, in a random order.
        """
        rng = np.random.default_rng(seed)
        x_train, y_train = balanced_subset(
            self.x_train, self.y_train, train_size, self.num_classes, rng,
            "train_size")
        x_test, y_test = balanced_subset(
            self.x_test, self.y_test, test_size, self.num_classes, rng,
            "test_size")
        return dataclasses.replace(self, x_train=x_train, y_train=y_train,
                                   x_test=x_test, y_test=y_test)


def balanced_subset(x, y, size, num_classes, rng, argname):
    """`size` examples of `(x, y)`, classes taken in turn (all if None).

    Raises:
        ValueError: `size` is not in [1, len(y)]; the message names
            `argname`.
    """
    if size is None:
        return x, y
    size = int(size)
    if not 0 < size <= len(y):
        raise ValueError(
            f"Argument `{argname}` must be in [1, {len(y)}]. "
            f"Received: {argname}={size}"
        )
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    chosen = []
    # Round-robin over classes until `size` examples are chosen.
    depth = 0
    while len(chosen) < size:
        for indices in by_class:
            if depth < len(indices) and len(chosen) < size:
                chosen.append(indices[depth])
        depth += 1
    chosen = rng.permutation(np.asarray(chosen))
    return x[chosen], y[chosen]
