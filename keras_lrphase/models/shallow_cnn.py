"""The shallow student network of the Heuristics paper's distillation study."""

import keras
from keras import layers

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import weight_decay_regularizer


def shallow_cnn(
    input_shape=(32, 32, 3),
    num_classes=10,
    weight_decay=0.0,
    filters=(16, 32),
    dense=(128, 64),
    name="shallow_cnn",
):
    """Builds `[conv, maxpool, relu] x 2, fc, relu, fc, fc`: the paper's student.

    Each entry of `filters` adds a 5x5 convolution (`"same"` padding, with
    bias), a 2x2 max pooling and a ReLU; the maps are flattened, then come
    `Dense(dense[0])` with a ReLU, `Dense(dense[1])` with no activation, and
    `Dense(num_classes)` named `"logits"`, exactly the layer sequence of
    Gotmare et al.'s student ("[conv, maxpool, relu]x2, fc, relu, fc, fc,
    softmax", the softmax being in the loss). Layers are named `conv1`,
    `conv2`, `fc1`, `fc2`, `logits`. Use it as the student of a
    distillation (`shallow-cnn` in `get_model`); it is cheap enough to
    train in a minute or two per run on a CPU.

    Args:
        input_shape: Tuple of ints. Image shape. Defaults to `(32, 32, 3)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 coefficient `lambda` of the gradient term
            `lambda * w`, on every kernel. Defaults to `0.0`.
        filters: Sequence of ints. Filters of each convolution. Defaults to
            `(16, 32)`.
        dense: Pair of ints. Units of the two hidden Dense layers (the
            first with a ReLU, the second without). Defaults to `(128, 64)`.
        name: String. Model name. Defaults to `"shallow_cnn"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> model = shallow_cnn()
    >>> model.count_params()
    285226
    >>> [layer.name for layer in model.layers if layer.weights]
    ['conv1', 'conv2', 'fc1', 'fc2', 'logits']

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 5.
    """
    filters = tuple(int(f) for f in filters)
    dense = tuple(int(u) for u in dense)
    if not filters or min(filters) < 1:
        raise ValueError(
            "Argument `filters` must be a non-empty sequence of positive "
            f"ints. Received: filters={filters}"
        )
    if len(dense) != 2 or min(dense) < 1:
        raise ValueError(
            "Argument `dense` must be two positive ints. "
            f"Received: dense={dense}"
        )
    num_classes = check_classes(num_classes)
    regularizer = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(
            f, 5, padding="same", kernel_initializer="he_normal",
            kernel_regularizer=regularizer, name=f"conv{i + 1}",
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense[0], activation="relu",
                     kernel_initializer="he_normal",
                     kernel_regularizer=regularizer, name="fc1")(x)
    x = layers.Dense(dense[1], kernel_initializer="glorot_uniform",
                     kernel_regularizer=regularizer, name="fc2")(x)
    outputs = layers.Dense(
        num_classes, kernel_initializer="glorot_uniform",
        kernel_regularizer=regularizer, name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=name)
