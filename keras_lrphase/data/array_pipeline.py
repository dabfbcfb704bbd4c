"""A backend-neutral input pipeline: NumPy batches through `keras.utils.PyDataset`.

The same preprocessing as the `tf.data` pipeline of `pipeline.py`
(per-channel normalisation, random crops of the image zero-padded by
`crop_padding` pixels, random horizontal flips) computed with NumPy on the
host, so that `keras-lrphase` trains without TensorFlow installed, on every
Keras backend. Every draw comes from a generator seeded by
`(seed, epoch, batch)`: the same seed gives the same batches, bit for bit,
on TensorFlow, JAX and torch, whichever worker thread makes a batch. (The
`tf.data` pipeline draws from TensorFlow's stateless generators, a
different stream: the two pipelines give equally distributed but not
identical augmentations.)
"""

import keras
import numpy as np

from keras_lrphase.data.pipeline import check_batching
from keras_lrphase.data.pipeline import crop_padding
from keras_lrphase.data.pipeline import normalize_array
from keras_lrphase.data.pipeline import steps_per_epoch


def random_crop_flip_array(images, padding, rng, flip=True):
    """NumPy random `padding`-pixel-padded crops and horizontal flips.

    The same operation as `pipeline.random_crop_flip`: zero padding (the
    mean colour after normalisation), a uniformly random crop offset per
    image, and with `flip` a left-right mirror with probability 1/2.

    Args:
        images: Float array `(batch, height, width, channels)`.
        padding: Int. Padding on each side.
        rng: A `numpy.random.Generator`.
        flip: Bool. Whether to flip at random. Defaults to `True`.

    Returns:
        A new array of the same shape and dtype.

    Example:

    >>> import numpy as np
    >>> images = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> a = random_crop_flip_array(images, 1, np.random.default_rng(3))
    >>> b = random_crop_flip_array(images, 1, np.random.default_rng(3))
    >>> bool((a == b).all()), a.shape
    (True, (1, 4, 4, 1))
    """
    images = np.asarray(images)
    batch, height, width = images.shape[:3]
    padded = np.pad(images, [(0, 0), (padding, padding), (padding, padding),
                             (0, 0)])
    offsets, mirror = crop_flip_draws(batch, padding, rng, flip)
    rows = offsets[0][:, None] + np.arange(height)[None, :]
    cols = offsets[1][:, None] + np.arange(width)[None, :]
    index = np.arange(batch)[:, None, None]
    cropped = padded[index, rows[:, :, None], cols[:, None, :]]
    if flip:
        cropped[mirror] = cropped[mirror, :, ::-1]
    return cropped


def crop_flip_draws(batch, padding, rng, flip=True):
    """The random draws of `random_crop_flip_array`, in its order.

    Returns:
        `(offsets, mirror)`: int array `(2, batch)` of row and column crop
        offsets in `[0, 2 * padding]`, and a bool array `(batch,)` of the
        images to mirror (all False without `flip`).
    """
    offsets = rng.integers(0, 2 * padding + 1, size=(2, batch))
    mirror = (rng.random(batch) < 0.5 if flip
              else np.zeros(batch, dtype=bool))
    return offsets, mirror


class TrainBatches(keras.utils.PyDataset):
    """Shuffled, augmented training sub-batches as NumPy arrays.

    The NumPy twin of `pipeline.train_dataset`, with the same contract: it
    yields `accumulate` sub-batches of `batch_size // accumulate` examples
    per optimizer step, `steps_per_epoch(len(x), batch_size)` steps per
    epoch, and drops the examples left over (a different subset each
    epoch). Epoch `e` (counted by `on_epoch_end`, which `fit` calls) uses
    the permutation of `numpy.random.default_rng((seed, e))`, and batch `i`
    of it the crops and flips of `default_rng((seed, e, i))`.

    Args:
        x: Array `(n, height, width, channels)`, `uint8` or float.
        y: Int array `(n,)`.
        batch_size: Int. Examples per optimizer step.
        mean: Array `(channels,)`. Normalisation mean (of `x / 255`).
        std: Array `(channels,)`. Normalisation standard deviation.
        augment: `"none"`, `"crop"` or `"crop-flip"`. Defaults to `"none"`.
        accumulate: Int. Sub-batches per optimizer step; must divide
            `batch_size`. Defaults to `1`.
        seed: Int. Shuffle and augmentation seed. Defaults to `0`.
        initial_epoch: Int. The epoch the first pass is, for a run that
            resumes. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Example:

    >>> import numpy as np
    >>> x = np.zeros((10, 4, 4, 1), "uint8"); y = np.arange(10) % 2
    >>> batches = TrainBatches(x, y, 4, [0.0], [1.0], accumulate=2)
    >>> len(batches), batches[0][0].shape
    (4, (2, 4, 4, 1))

    References:
        He et al., "Deep Residual Learning for Image Recognition", 2016
        (CIFAR augmentation).
    """

    def __init__(self, x, y, batch_size, mean, std, augment="none",
                 accumulate=1, seed=0, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        accumulate = check_batching(augment, batch_size, accumulate)
        self._x = np.asarray(x)
        self._y = np.asarray(y, "int32")
        self._mean = np.asarray(mean, "float32")
        self._std = np.asarray(std, "float32")
        self._augment = augment
        self._padding = crop_padding(*self._x.shape[1:3])
        self._sub_batch = int(batch_size) // accumulate
        self._batches = steps_per_epoch(len(self._x), batch_size) * accumulate
        self._seed = int(seed or 0)
        self.epoch = int(initial_epoch)
        self._order = None

    def __len__(self):
        return self._batches

    def _permutation(self):
        if self._order is None or self._order[0] != self.epoch:
            rng = np.random.default_rng((self._seed, self.epoch))
            self._order = (self.epoch, rng.permutation(len(self._x)))
        return self._order[1]

    def __getitem__(self, index):
        if not 0 <= index < self._batches:
            raise IndexError(index)
        chosen = self._chosen(index)
        images = normalize_array(self._x[chosen], self._mean, self._std)
        if self._augment != "none":
            images = random_crop_flip_array(
                images, self._padding, self._rng(index),
                flip=self._augment == "crop-flip")
        return images, self._y[chosen]

    def _chosen(self, index):
        """The training examples of batch `index` of this epoch, sorted."""
        start = index * self._sub_batch
        return np.sort(self._permutation()[start:start + self._sub_batch])

    def _rng(self, index):
        """The generator of batch `index`'s crops and flips this epoch."""
        return np.random.default_rng((self._seed, self.epoch, index))

    def on_epoch_end(self):
        self.epoch += 1

    def epoch_callback(self):
        """A Keras callback that sets `epoch` to `fit`'s epoch as each begins.

        Pass it to `fit` with this dataset when training may resume
        (`BackupAndRestore`, `initial_epoch`): the batches of epoch `e` are
        then those of epoch `e` of an uninterrupted run.
        """
        batches = self

        class SyncEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                batches.epoch = int(epoch)

        return SyncEpoch()
