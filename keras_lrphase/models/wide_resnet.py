"""Wide residual networks (Zagoruyko & Komodakis 2016): WRN-16-8, WRN-28-10.

The paper this package implements trains WRN-28-10 on CIFAR-100 (Table 3) and
WRN-16-8 with dropout 0.5 on SVHN (Table 4).
"""

import keras
from keras import layers

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import classifier_head
from keras_lrphase.models.arguments import weight_decay_regularizer


def _bn(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv(filters, kernel, strides, weight_decay, name):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=weight_decay_regularizer(weight_decay),
        name=name,
    )


def _wide_block(x, filters, strides, dropout, weight_decay, name):
    pre = _bn(f"{name}_bn1")(x)
    pre = layers.Activation("relu", name=f"{name}_relu1")(pre)
    y = _conv(filters, 3, strides, weight_decay, f"{name}_conv1")(pre)
    y = _bn(f"{name}_bn2")(y)
    y = layers.Activation("relu", name=f"{name}_relu2")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _conv(filters, 3, 1, weight_decay, f"{name}_conv2")(y)
    if strides != 1 or x.shape[-1] != filters:
        x = _conv(filters, 1, strides, weight_decay, f"{name}_shortcut_conv")(pre)
    return layers.Add(name=f"{name}_add")([x, y])


def wide_resnet(
    depth,
    width,
    dropout=0.0,
    input_shape=(32, 32, 3),
    num_classes=10,
    weight_decay=0.0,
    name=None,
):
    """Builds the wide residual network WRN-`depth`-`width`.

    A 3x3 convolution with 16 filters, then three groups of
    `n = (depth - 4) / 6` pre-activation wide basic blocks
    (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with `16 * width`,
    `32 * width` and `64 * width` filters (strides 1, 2, 2; 1x1 convolution
    shortcuts where the shape changes), a final BN-ReLU, global average
    pooling and a `Dense(num_classes)` layer named `"logits"` producing
    logits. Use WRN-28-10 for CIFAR-100 and WRN-16-8 (dropout 0.5) for SVHN as
    in the paper; both are far too heavy for CPU training.

    Args:
        depth: Int. Depth; `depth - 4` must be divisible by 6.
        width: Int. Widening factor `k` (>= 1).
        dropout: Float in [0, 1). Dropout rate between the two convolutions
            of every block. Defaults to `0.0`.
        input_shape: Tuple of ints. Image shape. Defaults to `(32, 32, 3)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 coefficient `lambda` of the gradient term
            `lambda * w`. Defaults to `0.0`.
        name: String. Model name. Defaults to `"wrn-{depth}-{width}"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> model = wide_resnet(10, 1, input_shape=(8, 8, 3))
    >>> model.count_params()
    78330

    References:
        Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    """
    depth, width = int(depth), int(width)
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            "Argument `depth` must be 6n + 4 with n >= 1 (10, 16, 22, 28, "
            f"...). Received: depth={depth}"
        )
    if width < 1:
        raise ValueError(f"Argument `width` must be >= 1. Received: width={width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Argument `dropout` must be in [0, 1). Received: dropout={dropout}"
        )
    num_classes = check_classes(num_classes)
    blocks = (depth - 4) // 6
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(16, 3, 1, weight_decay, "stem_conv")(inputs)
    for group, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            strides = 2 if group > 0 and block == 0 else 1
            x = _wide_block(
                x, filters, strides, dropout, weight_decay,
                name=f"group{group + 1}_block{block + 1}",
            )
    x = _bn("final_bn")(x)
    x = layers.Activation("relu", name="final_relu")(x)
    outputs = classifier_head(x, num_classes, weight_decay)
    return keras.Model(inputs, outputs, name=name or f"wrn-{depth}-{width}")
