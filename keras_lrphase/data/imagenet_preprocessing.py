"""The ImageNet preprocessing of the two-phase paper (Appendix A.2).

Training images (after He et al. 2019, "Bag of Tricks"), image by image:

1. resize keeping the aspect ratio, the shorter side drawn uniformly from
   [256, 384] pixels (the paper's "256 x 384 keeping the original aspect
   ratio", read as the range of the shorter side: scale augmentation);
2. a 224 x 224 crop at a uniformly random position;
3. a horizontal flip with probability 0.5;
4. brightness: `+ delta`, `delta` uniform in [-32/255, 32/255];
5. hue (HSV colour space): `+ delta`, `delta` uniform in [-0.1, 0.1];
6. saturation: `x factor`, uniform in [0.6, 1.4];
7. contrast: `x factor` around the channel means, uniform in [0.6, 1.4];
8. per-channel normalisation with the ImageNet mean and standard deviation.

The colour steps work on pixels in [0, 1] (clipped after the brightness and
after the contrast step), which is the scale the paper's deltas (32/255)
are given in; the channel-wise normalisation, which the paper lists first,
is applied last (it is affine, so only the meaning of the deltas depends on
the order). Evaluation images: shorter side resized to 256, the central
224 x 224 crop, normalised. Other crop sizes `s` scale every size by
`s / 224` (shorter side in [8/7 s, 12/7 s], 8/7 s for evaluation), which is
how the tests run the preset on tiny images.

Every random choice of one image is drawn from a stateless seed by
`draw_augmentation` and applied by `augment_image`, so a seed fixes the
result whatever thread runs the image, and the draws can be inspected.
"""

import numpy as np

IMAGE_SIZE = 224
# Per-channel statistics of ImageNet's training images scaled to [0, 1]
# (He et al. 2019 give them x255: 123.68, 116.78, 103.94 / 58.39, 57.12, 57.38).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BRIGHTNESS_DELTA = 32 / 255
HUE_DELTA = 0.1
SATURATION_RANGE = (0.6, 1.4)
CONTRAST_RANGE = (0.6, 1.4)
FLIP_PROBABILITY = 0.5
AUGMENT_MODES = ("none", "crop", "crop-flip", "crop-flip-color")
_DRAWS = ("short_side", "top", "left", "flip", "brightness", "hue",
          "saturation", "contrast")


def check_image_size(image_size):
    """Returns `image_size` as an int, or raises naming the argument."""
    if (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
            or image_size < 8):
        raise ValueError(
            "Argument `image_size` must be an integer >= 8. "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size)


def resize_range(image_size=IMAGE_SIZE):
    """Shorter side of resized training images: `(256, 384)` at 224.

    Example:

    >>> resize_range(224), resize_range(32)
    ((256, 384), (37, 55))
    """
    image_size = check_image_size(image_size)
    return (int(image_size * 256 / 224 + 0.5), int(image_size * 384 / 224 + 0.5))


def eval_resize(image_size=IMAGE_SIZE):
    """Shorter side of resized evaluation images: 256 at 224."""
    return resize_range(image_size)[0]


def resized_shape(height, width, short_side):
    """`(height, width)` with the shorter side `short_side`, aspect kept.

    The longer side is rounded to the nearest pixel. Works on ints and on
    scalar int tensors.

    Example:

    >>> [int(v) for v in resized_shape(300, 500, 256)]
    [256, 427]
    """
    import tensorflow as tf

    height = tf.cast(height, "float32")
    width = tf.cast(width, "float32")
    short = tf.cast(short_side, "float32")
    scale = short / tf.minimum(height, width)
    new_height = tf.maximum(tf.round(height * scale), short)
    new_width = tf.maximum(tf.round(width * scale), short)
    return tf.cast(new_height, "int32"), tf.cast(new_width, "int32")


def draw_augmentation(seed, height, width, image_size=IMAGE_SIZE):
    """The random choices of one training image, from a stateless seed.

    Args:
        seed: Int tensor or pair of ints: the image's stateless seed.
        height: Int or int tensor. Height of the decoded image.
        width: Int or int tensor. Width of the decoded image.
        image_size: Int. Side of the square crop. Defaults to `224`.

    Returns:
        A dict of scalar tensors: `short_side` (int, in `resize_range`),
        `height` and `width` of the resized image, `top` and `left` (the
        crop's corner in the resized image), `flip` (bool), `brightness`,
        `hue` (additive deltas), `saturation` and `contrast` (factors).

    Example:

    >>> draws = draw_augmentation((1, 2), 300, 500)
    >>> 256 <= int(draws["short_side"]) <= 384
    True
    >>> 0.6 <= float(draws["contrast"]) < 1.4
    True
    """
    import tensorflow as tf

    image_size = check_image_size(image_size)
    seeds = tf.random.experimental.stateless_split(
        tf.cast(tf.convert_to_tensor(seed), "int64"), num=len(_DRAWS))
    seeds = dict(zip(_DRAWS, tf.unstack(seeds)))
    low, high = resize_range(image_size)

    def uniform(name, minval, maxval, dtype="float32"):
        return tf.random.stateless_uniform([], seeds[name], minval, maxval, dtype)

    short = uniform("short_side", low, high + 1, "int32")
    new_height, new_width = resized_shape(height, width, short)
    return {
        "short_side": short,
        "height": new_height,
        "width": new_width,
        "top": uniform("top", 0, new_height - image_size + 1, "int32"),
        "left": uniform("left", 0, new_width - image_size + 1, "int32"),
        "flip": uniform("flip", 0.0, 1.0) < FLIP_PROBABILITY,
        "brightness": uniform("brightness", -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA),
        "hue": uniform("hue", -HUE_DELTA, HUE_DELTA),
        "saturation": uniform("saturation", *SATURATION_RANGE),
        "contrast": uniform("contrast", *CONTRAST_RANGE),
    }


def augment_image(image, draws, image_size=IMAGE_SIZE, flip=True, color=True):
    """Applies `draw_augmentation`'s choices to one image in [0, 1].

    Args:
        image: Float tensor `(height, width, 3)` with values in [0, 1].
        draws: The dict `draw_augmentation` returns for this image.
        image_size: Int. Side of the crop. Defaults to `224`.
        flip: Bool. Apply the flip draw. Defaults to `True`.
        color: Bool. Apply the brightness, hue, saturation and contrast
            draws. Defaults to `True`.

    Returns:
        A float32 tensor `(image_size, image_size, 3)` in [0, 1] (not
        normalised).
    """
    import tensorflow as tf

    image_size = check_image_size(image_size)
    resized = tf.image.resize(image, tf.stack([draws["height"], draws["width"]]))
    crop = tf.slice(resized, tf.stack([draws["top"], draws["left"], 0]),
                    [image_size, image_size, 3])
    if flip:
        crop = tf.where(draws["flip"], tf.reverse(crop, axis=[1]), crop)
    if color:
        crop = tf.clip_by_value(
            tf.image.adjust_brightness(crop, draws["brightness"]), 0.0, 1.0)
        crop = tf.image.adjust_hue(crop, draws["hue"])
        crop = tf.image.adjust_saturation(crop, draws["saturation"])
        crop = tf.clip_by_value(
            tf.image.adjust_contrast(crop, draws["contrast"]), 0.0, 1.0)
    return tf.ensure_shape(crop, (image_size, image_size, 3))


def center_crop(image, image_size=IMAGE_SIZE):
    """Evaluation view of one image in [0, 1]: resize the shorter side to
    `eval_resize(image_size)`, keep the central `image_size` square.

    Returns:
        A float32 tensor `(image_size, image_size, 3)` (not normalised).
    """
    import tensorflow as tf

    image_size = check_image_size(image_size)
    shape = tf.shape(image)
    height, width = resized_shape(shape[0], shape[1], eval_resize(image_size))
    resized = tf.image.resize(image, tf.stack([height, width]))
    top = (height - image_size) // 2
    left = (width - image_size) // 2
    crop = tf.slice(resized, tf.stack([top, left, 0]), [image_size, image_size, 3])
    return tf.ensure_shape(crop, (image_size, image_size, 3))


def normalize_imagenet(image):
    """`(image - MEAN) / STD` for a float image in [0, 1]."""
    import tensorflow as tf

    return (image - tf.constant(MEAN, "float32")) / tf.constant(STD, "float32")


def decode(encoded):
    """An encoded JPEG/PNG string to a float32 RGB image in [0, 1]."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.image.convert_image_dtype(image, "float32")


def train_image(image, seed, image_size=IMAGE_SIZE, augment="crop-flip-color"):
    """The training view of one decoded image, normalised.

    Args:
        image: Float tensor `(height, width, 3)` in [0, 1] (`decode`).
        seed: The image's stateless seed (int tensor of shape `(2,)`).
        image_size: Int. Side of the crop. Defaults to `224`.
        augment: `"crop-flip-color"` (the paper's: every step of the module
            docstring), `"crop-flip"` (no colour jitter), `"crop"` (no flip
            either) or `"none"` (the evaluation view). Defaults to
            `"crop-flip-color"`.

    Returns:
        A float32 tensor `(image_size, image_size, 3)`.

    Example:

    >>> import numpy as np
    >>> image = np.full((40, 60, 3), 0.5, "float32")
    >>> tuple(train_image(image, (0, 7), image_size=32).shape)
    (32, 32, 3)

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Appendix A.2; He et al., "Bag of Tricks for Image Classification
        with Convolutional Neural Networks", CVPR 2019.
    """
    import tensorflow as tf

    if augment not in AUGMENT_MODES:
        raise ValueError(
            f"Argument `augment` must be one of {', '.join(AUGMENT_MODES)}. "
            f"Received: augment={augment!r}"
        )
    if augment == "none":
        return normalize_imagenet(center_crop(image, image_size))
    shape = tf.shape(image)
    draws = draw_augmentation(seed, shape[0], shape[1], image_size)
    crop = augment_image(image, draws, image_size, flip=augment != "crop",
                         color=augment == "crop-flip-color")
    return normalize_imagenet(crop)


def eval_image(image, image_size=IMAGE_SIZE):
    """The evaluation view of one decoded image (`center_crop`), normalised."""
    return normalize_imagenet(center_crop(image, image_size))
