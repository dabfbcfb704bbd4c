"""A small convolutional network for tiny images (the offline demo's model)."""

import keras
from keras import layers

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import classifier_head
from keras_lrphase.models.arguments import weight_decay_regularizer


def small_cnn(
    input_shape=(8, 8, 1),
    num_classes=10,
    weight_decay=0.0,
    filters=(16, 32),
    name="small_cnn",
):
    """Builds a small CNN: conv blocks, global average pooling, logits.

    Each entry of `filters` adds a 3x3 convolution (no bias) followed by batch
    normalisation and ReLU; every block after the first uses stride 2. A
    global average pooling and a `Dense(num_classes)` layer named `"logits"`
    (no activation) follow. Use it where a ResNet is too slow: the offline
    `demo` preset trains it on scikit-learn's 8x8 digits in seconds per
    epoch on a CPU, with batch normalisation so it behaves like the paper's
    networks under large learning rates.

    Args:
        input_shape: Tuple of ints. Image shape. Defaults to `(8, 8, 1)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 coefficient `lambda` of the gradient term
            `lambda * w`. Defaults to `0.0`.
        filters: Sequence of ints. Filters of each convolution block.
            Defaults to `(16, 32)`.
        name: String. Model name. Defaults to `"small_cnn"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> small_cnn().count_params()
    5274

    References:
        The digits data: Alpaydin & Kaynak, UCI "Optical Recognition of
        Handwritten Digits" (as bundled in scikit-learn).
    """
    filters = tuple(int(f) for f in filters)
    if not filters or min(filters) < 1:
        raise ValueError(
            "Argument `filters` must be a non-empty sequence of positive "
            f"ints. Received: filters={filters}"
        )
    num_classes = check_classes(num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(
            f, 3, strides=1 if i == 0 else 2, padding="same", use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=weight_decay_regularizer(weight_decay),
            name=f"conv{i + 1}",
        )(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                      name=f"bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
    outputs = classifier_head(x, num_classes, weight_decay)
    return keras.Model(inputs, outputs, name=name)
