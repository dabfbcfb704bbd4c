"""A training pipeline whose images stay in accelerator memory.

`DeviceTrainBatches` copies the training set to the device once, as
`uint8` (150 MB for CIFAR-10), and makes every batch there: one compiled
function gathers the batch's images, normalises them and applies the
padded crops and flips. The random draws are those of `TrainBatches`, the
NumPy pipeline (same seed, same permutation, same crop offsets and
mirrors, bit for bit on every backend); they are made on the host once per
epoch and copied with that epoch's plan (about 7 bytes per image), so a
step sends the device only its batch number. The batches equal
`TrainBatches`' up to float rounding.

Keras' JAX and torch trainers take the device arrays of a `PyDataset` as
they are, so on those backends the training images never cross the bus
after the first copy. (TensorFlow's trainer would copy each batch through
the host, which is why the CLI refuses `--pipeline device` there: its
`tf.data` pipeline is TensorFlow's accelerator path.)
"""

import threading

import keras
import numpy as np
from keras import ops

from keras_lrphase.data.array_pipeline import TrainBatches
from keras_lrphase.data.array_pipeline import crop_flip_draws


class DeviceTrainBatches(TrainBatches):
    """`TrainBatches` made on the device from a device-resident training set.

    Same arguments, contract and batches as `TrainBatches` (the NumPy
    pipeline): `accumulate` sub-batches per optimizer step, the permutation
    of `numpy.random.default_rng((seed, epoch))`, and the crops and flips of
    `default_rng((seed, epoch, batch))`. Only where the work happens
    differs: `x` and `y` are copied to the device once; at the first batch
    of each epoch the epoch's indices, crop offsets and mirrors are drawn on
    the host and copied in one transfer; each batch is then gathered,
    normalised, cropped and flipped by one compiled function (`jax.jit` on
    JAX; device kernels on torch), and returned as device tensors.

    Args:
        x: Array `(n, height, width, channels)`, `uint8` or float.
        y: Int array `(n,)`.
        batch_size: Int. Examples per optimizer step.
        mean: Array `(channels,)`. Normalisation mean (of `x / 255`).
        std: Array `(channels,)`. Normalisation standard deviation.
        augment: `"none"`, `"crop"` or `"crop-flip"`. Defaults to `"none"`.
        accumulate: Int. Sub-batches per optimizer step. Defaults to `1`.
        seed: Int. Shuffle and augmentation seed. Defaults to `0`.
        initial_epoch: Int. The epoch the first pass is. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments.

    Example:

    >>> import numpy as np
    >>> x = np.arange(10 * 16, dtype="uint8").reshape(10, 4, 4, 1)
    >>> y = np.arange(10) % 2
    >>> args = (x, y, 4, [0.5], [0.25])
    >>> device = DeviceTrainBatches(*args, augment="crop", seed=1)
    >>> host = TrainBatches(*args, augment="crop", seed=1)
    >>> images, labels = device[1]
    >>> bool(np.allclose(ops.convert_to_numpy(images), host[1][0], atol=1e-5))
    True

    References:
        He et al., "Deep Residual Learning for Image Recognition", 2016
        (CIFAR augmentation).
    """

    def __init__(self, x, y, batch_size, mean, std, augment="none",
                 accumulate=1, seed=0, initial_epoch=0, **kwargs):
        super().__init__(x, y, batch_size, mean, std, augment=augment,
                         accumulate=accumulate, seed=seed,
                         initial_epoch=initial_epoch, **kwargs)
        self._device_x = ops.convert_to_tensor(self._x)
        self._device_y = ops.convert_to_tensor(self._y)
        # The normalisation of `normalize_array`, in its order.
        scale = 255.0 if self._x.dtype == np.uint8 else 1.0
        self._constants = tuple(ops.convert_to_tensor(np.asarray(a, "float32"))
                                for a in (scale, self._mean, self._std))
        self._plan = None
        self._plan_lock = threading.Lock()
        self._make_batch = _compiled(_batch_fn(
            self._augment != "none", self._padding))

    def _epoch_plan(self):
        """This epoch's indices, offsets and mirrors, on the device."""
        with self._plan_lock:
            if self._plan is None or self._plan[0] != self.epoch:
                chosen, offsets, mirror = [], [], []
                for index in range(self._batches):
                    chosen.append(self._chosen(index))
                    if self._augment != "none":
                        o, m = crop_flip_draws(
                            self._sub_batch, self._padding, self._rng(index),
                            flip=self._augment == "crop-flip")
                    else:
                        o = np.zeros((2, self._sub_batch), "int64")
                        m = np.zeros(self._sub_batch, bool)
                    offsets.append(o)
                    mirror.append(m)
                plan = (np.stack(chosen).astype("int32"),
                        np.stack(offsets).astype("int32"),
                        np.stack(mirror))
                self._plan = (self.epoch,
                              tuple(ops.convert_to_tensor(a) for a in plan))
            return self._plan[1]

    def __getitem__(self, index):
        if not 0 <= index < self._batches:
            raise IndexError(index)
        chosen, offsets, mirror = self._epoch_plan()
        return self._make_batch(
            self._device_x, self._device_y, *self._constants, chosen, offsets,
            mirror, ops.convert_to_tensor(np.int32(index)))


def _batch_fn(augment, padding):
    """The per-batch function: gather, normalise, and crop and flip."""

    def make_batch(x, y, scale, mean, std, chosen, offsets, mirror, index):
        rows = ops.take(chosen, index, axis=0)
        images = ops.take(x, rows, axis=0)
        labels = ops.take(y, rows, axis=0)
        images = (ops.cast(images, "float32") / scale - mean) / std
        if not augment:
            return images, labels
        batch, height, width, channels = images.shape
        offset = ops.take(offsets, index, axis=0)
        flip = ops.take(mirror, index, axis=0)
        padded = ops.pad(images, [(0, 0), (padding, padding),
                                  (padding, padding), (0, 0)])
        padded_width = width + 2 * padding
        row = offset[0][:, None] + ops.arange(height, dtype="int32")[None, :]
        col = ops.where(
            flip[:, None],
            offset[1][:, None] + (width - 1) - ops.arange(width, dtype="int32"),
            offset[1][:, None] + ops.arange(width, dtype="int32"))
        pixel = row[:, :, None] * padded_width + col[:, None, :]
        pixel = ops.reshape(pixel, (batch, height * width, 1))
        pixel = ops.broadcast_to(pixel, (batch, height * width, channels))
        flat = ops.reshape(padded, (batch, -1, channels))
        cropped = ops.take_along_axis(flat, pixel, axis=1)
        return ops.reshape(cropped, (batch, height, width, channels)), labels

    return make_batch


def _compiled(fn):
    """`fn` compiled for the device where the backend compiles eager calls."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "torch":
        import torch

        def no_grad(*args):
            with torch.no_grad():
                return fn(*args)

        return no_grad
    return fn
