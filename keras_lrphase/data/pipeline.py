"""`tf.data` input pipelines with the paper's preprocessing.

Per-channel mean/std normalisation with statistics of the training split,
and for CIFAR random crops of the image zero-padded by 4 pixels plus random
horizontal flips (He et al. 2016; the paper's Appendix A.2). The padding is
1/8 of the image side (4 pixels at 32x32, 1 pixel for the 8x8 digits, which
use crops without flips). Augmentation
runs on whole batches (one gather per axis), so two CPU cores keep up with
the model. The pipelines work under every Keras backend's `fit`.
"""

import numpy as np

AUGMENT_MODES = ("none", "crop", "crop-flip")


def channel_stats(images):
    """Per-channel mean and standard deviation of images scaled to [0, 1].

    Args:
        images: Array `(n, height, width, channels)`, `uint8` (0..255) or
            float (already in [0, 1]).

    Returns:
        A tuple `(mean, std)` of `float32` arrays of shape `(channels,)`.
    """
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    channels = images.shape[-1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for start in range(0, len(images), 4096):
        chunk = images[start:start + 4096].reshape(-1, channels) / scale
        total += chunk.sum(axis=0)
        squares += (chunk * chunk).sum(axis=0)
        count += len(chunk)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    std = np.where(std > 0, std, 1.0)
    return mean.astype("float32"), std.astype("float32")


def normalize(images, mean, std):
    """`(images / 255 - mean) / std` for `uint8` input (no /255 for floats)."""
    import tensorflow as tf

    scale = 255.0 if images.dtype == tf.uint8 else 1.0
    images = tf.cast(images, "float32") / scale
    return (images - tf.constant(mean, "float32")) / tf.constant(std, "float32")


def normalize_array(images, mean, std):
    """`(images / 255 - mean) / std` as `float32` (no /255 for float input)."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    out = images.astype("float32") / np.float32(scale)
    out -= np.asarray(mean, "float32")
    out /= np.asarray(std, "float32")
    return out


def crop_padding(height, width):
    """Padding of the random crops: 1/8 of the shorter side, at least 1."""
    return max(1, int(round(min(height, width) / 8)))


def random_crop_flip(images, padding=4, seed=None, flip=True):
    """Random `padding`-pixel-padded crops and horizontal flips of a batch.

    Each image is zero-padded by `padding` pixels on every side (after
    normalisation zero is the mean colour), cropped back to its size at a
    uniformly random offset, and (with `flip`) mirrored left-right with
    probability 1/2. The draws are stateless: the same `seed` gives the
    same crops and flips, whatever thread runs the batch.

    Args:
        images: Float tensor `(batch, height, width, channels)`.
        padding: Int. Padding on each side. Defaults to `4`.
        seed: Int, pair of ints or int tensor of shape `(2,)`: the
            stateless seed of this batch (an int `s` is the pair `(s, 0)`);
            `None` draws one from TensorFlow's global generator. Defaults
            to `None`.
        flip: Bool. Whether to flip at random. Defaults to `True`.

    Returns:
        A tensor of the same shape.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> images = tf.constant(np.arange(16.0).reshape(1, 4, 4, 1))
    >>> a = random_crop_flip(images, padding=1, seed=(3, 0))
    >>> bool(tf.reduce_all(a == random_crop_flip(images, padding=1, seed=(3, 0))))
    True
    """
    import tensorflow as tf

    given = seed
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype="int32")
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seed = (int(seed), 0)
    seed = tf.convert_to_tensor(seed)
    if (seed.shape.rank != 1 or seed.shape[0] not in (None, 2)
            or not seed.dtype.is_integer):
        raise ValueError(
            "Argument `seed` must be None, an int or a pair of ints. "
            f"Received: seed={given!r}"
        )
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding],
                             [0, 0]])
    offsets = tf.random.stateless_uniform([2, batch], crop_seed, 0,
                                          2 * padding + 1, "int32")
    rows = offsets[0][:, None] + tf.range(height)[None, :]
    cols = offsets[1][:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    if not flip:
        return cropped
    flip = tf.random.stateless_uniform([batch], flip_seed)
    return tf.where(flip[:, None, None, None] < 0.5,
                    tf.reverse(cropped, axis=[2]), cropped)


def steps_per_epoch(num_examples, batch_size):
    """Optimizer steps per epoch: full batches only (`num_examples // batch_size`)."""
    steps = int(num_examples) // int(batch_size)
    if steps < 1:
        raise ValueError(
            f"Argument `batch_size` must be at most the number of training "
            f"examples ({num_examples}). Received: batch_size={batch_size}"
        )
    return steps


def check_batching(augment, batch_size, accumulate, modes=AUGMENT_MODES):
    """Checks the arguments the training pipelines share; returns `accumulate`.

    `modes` are the pipeline's augmentations (ImageNet's has one more)."""
    if augment not in modes:
        raise ValueError(
            f"Argument `augment` must be one of {', '.join(modes)}. "
            f"Received: augment={augment!r}"
        )
    accumulate = int(accumulate)
    if accumulate < 1 or batch_size % accumulate:
        raise ValueError(
            f"Argument `batch_size` must be divisible by `accumulate`. "
            f"Received: batch_size={batch_size}, accumulate={accumulate}"
        )
    return accumulate


def train_dataset(x, y, batch_size, mean, std, augment="none", accumulate=1,
                  seed=None):
    """The training pipeline: shuffle, batch, augment, prefetch.

    Use it with `gradient_accumulation_steps=accumulate` on the optimizer:
    it yields sub-batches of `batch_size // accumulate` examples, exactly
    `accumulate` of them per optimizer step and
    `steps_per_epoch(len(x), batch_size)` steps per pass, so that the
    accumulation never straddles an epoch. Examples left over are dropped
    (a different random subset each epoch).

    Args:
        x: Array `(n, height, width, channels)`, `uint8` or float.
        y: Int array `(n,)`.
        batch_size: Int. Examples per optimizer step.
        mean: Array `(channels,)`. Normalisation mean (of `x / 255`).
        std: Array `(channels,)`. Normalisation standard deviation.
        augment: `"none"`, `"crop"` (random crops of the image padded by
            `crop_padding`) or `"crop-flip"` (crops and horizontal flips).
            Defaults to `"none"`.
        accumulate: Int. Sub-batches per optimizer step; must divide
            `batch_size`. Defaults to `1`.
        seed: Int or `None`. Shuffle and augmentation seed: the same seed
            gives the same sequence of batches in every run.
            Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` sub-batches (`float32`,
        `int32`), reshuffled every epoch.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((10, 4, 4, 1), "uint8"); y = np.arange(10) % 2
    >>> ds = train_dataset(x, y, 4, [0.0], [1.0], accumulate=2)
    >>> [tuple(b[0].shape) for b in ds]
    [(2, 4, 4, 1), (2, 4, 4, 1), (2, 4, 4, 1), (2, 4, 4, 1)]

    References:
        He et al., "Deep Residual Learning for Image Recognition", 2016
        (CIFAR augmentation).
    """
    import tensorflow as tf

    accumulate = check_batching(augment, batch_size, accumulate)
    steps = steps_per_epoch(len(x), batch_size)
    sub_batch = batch_size // accumulate
    padding = crop_padding(*np.shape(x)[1:3])

    def prepare(batch, batch_seed):
        images, labels = batch
        images = normalize(images, mean, std)
        if augment != "none":
            images = random_crop_flip(images, padding, seed=batch_seed,
                                      flip=augment == "crop-flip")
        return images, labels

    ds = tf.data.Dataset.from_tensor_slices(
        (np.asarray(x), np.asarray(y, "int32")))
    ds = ds.cache().shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(sub_batch, drop_remainder=True).take(steps * accumulate)
    # One stateless seed per sub-batch, new each epoch: the parallel map
    # then gives the same augmentation whichever thread runs a batch (a
    # stateful random op would hand out its draws in thread order).
    batch_seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, batch_seeds))
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x, y, batch_size, mean, std):
    """The evaluation pipeline: normalise, batch, cache, prefetch.

    Args:
        x: Array `(n, height, width, channels)`.
        y: Int array `(n,)`.
        batch_size: Int. Evaluation batch size.
        mean: Array `(channels,)`. Normalisation mean.
        std: Array `(channels,)`. Normalisation standard deviation.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches in order.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (np.asarray(x), np.asarray(y, "int32")))
    ds = ds.batch(int(batch_size)).map(
        lambda images, labels: (normalize(images, mean, std), labels),
        num_parallel_calls=tf.data.AUTOTUNE)
    return ds.cache().prefetch(tf.data.AUTOTUNE)


def normalized_batch(x, y, size, mean, std, seed=0):
    """A fixed random batch of `size` normalised, un-augmented examples.

    The one large batch on which the Hessian eigenvalue is estimated.

    Returns:
        A tuple `(x, y)` of NumPy arrays (`float32`, `int32`).
    """
    size = int(size)
    if not 0 < size <= len(x):
        raise ValueError(
            f"Argument `size` must be in [1, {len(x)}] (the number of "
            f"examples). Received: size={size}"
        )
    index = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
    return (normalize_array(np.asarray(x)[index], mean, std),
            np.asarray(y, "int32")[index])
