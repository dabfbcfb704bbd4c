"""The CIFAR ResNets of He et al. (2016): ResNet-20, -32, -44, -56, -110.

These are the networks of Section 4.2 of "Deep Residual Learning for Image
Recognition" (3 stages of `n` basic blocks with 16, 32 and 64 filters, depth
`6n + 2`), not the ImageNet bottleneck ResNets of `keras.applications`.
ResNet-20 is the model of the CIFAR-10 experiments (Table 2) of the two-phase
learning-rate paper this package implements.
"""

import keras
from keras import layers
from keras import ops

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import classifier_head
from keras_lrphase.models.arguments import weight_decay_regularizer


@keras.saving.register_keras_serializable(package="keras_lrphase")
class ZeroPadShortcut(layers.Layer):
    """Parameter-free "option A" shortcut: subsample, then zero-pad channels.

    Used where a residual stage halves the resolution and doubles the number
    of filters: the identity is subsampled by `strides` and the new channels
    are zeros (half before, half after the input channels), so the shortcut
    adds no parameters.

    Args:
        filters: Int. Number of output channels (at least the input's).
        strides: Int. Spatial subsampling factor. Defaults to `2`.

    Example:

    >>> import numpy as np
    >>> y = ZeroPadShortcut(8)(np.ones((1, 4, 4, 4), "float32"))
    >>> y = keras.ops.convert_to_numpy(y)
    >>> y.shape, y[0, 0, 0].tolist()  # 2 zero channels on each side
    ((1, 2, 2, 8), [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
        Section 4.2 (option A).
    """

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        if self.strides < 1:
            raise ValueError(
                f"Argument `strides` must be >= 1. Received: strides={strides}"
            )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels > self.filters:
            raise ValueError(
                "Argument `filters` must be at least the number of input "
                f"channels ({channels}). Received: filters={self.filters}"
            )

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - inputs.shape[-1]
        if extra == 0:
            return x
        low = extra // 2
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [low, extra - low]])

    def compute_output_shape(self, input_shape):
        def sub(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]),
                self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config


def _conv(filters, strides, weight_decay, name):
    return layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=weight_decay_regularizer(weight_decay),
        name=name,
    )


def _bn(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _basic_block(x, filters, strides, shortcut, weight_decay, name):
    y = _conv(filters, strides, weight_decay, f"{name}_conv1")(x)
    y = _bn(f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = _conv(filters, 1, weight_decay, f"{name}_conv2")(y)
    y = _bn(f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        if shortcut == "A":
            x = ZeroPadShortcut(filters, strides, name=f"{name}_shortcut")(x)
        else:
            x = layers.Conv2D(
                filters, 1, strides=strides, use_bias=False,
                kernel_initializer="he_normal",
                kernel_regularizer=weight_decay_regularizer(weight_decay),
                name=f"{name}_shortcut_conv",
            )(x)
            x = _bn(f"{name}_shortcut_bn")(x)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def cifar_resnet(
    depth,
    input_shape=(32, 32, 3),
    num_classes=10,
    weight_decay=0.0,
    shortcut="A",
    name=None,
):
    """Builds the CIFAR ResNet of depth `6n + 2` (He et al. 2016, Sec. 4.2).

    A 3x3 convolution with 16 filters, three stages of `n = (depth - 2) / 6`
    basic blocks (two 3x3 convolutions each, batch normalisation after every
    convolution) with 16, 32 and 64 filters, the second and third stage
    starting with stride 2, then global average pooling and a
    `Dense(num_classes)` layer named `"logits"` that outputs logits (train
    with `from_logits=True`). Use it for CIFAR-sized images; depth 20, 32, 44,
    56 and 110 give the networks of the paper's Table 6.

    Args:
        depth: Int. Total depth; `depth - 2` must be divisible by 6.
        input_shape: Tuple of ints. Image shape `(height, width, channels)`.
            Defaults to `(32, 32, 3)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 weight decay coefficient `lambda` of the
            gradient term `lambda * w`, applied to every convolution and
            dense kernel as `keras.regularizers.L2(lambda / 2)`.
            Defaults to `0.0` (none).
        shortcut: `"A"` or `"B"`. `"A"` (the paper's choice for CIFAR):
            parameter-free identity shortcuts, subsampled and zero-padded where
            the shape changes; `"B"`: 1x1 convolution + batch normalisation
            projections where the shape changes. Defaults to `"A"`.
        name: String. Model name. Defaults to `"resnet{depth}"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> model = cifar_resnet(32)
    >>> model.count_params()
    466426

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    depth = int(depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            "Argument `depth` must be 6n + 2 with n >= 1 (20, 32, 44, 56, "
            f"110, ...). Received: depth={depth}"
        )
    if shortcut not in ("A", "B"):
        raise ValueError(
            f"Argument `shortcut` must be 'A' or 'B'. Received: shortcut={shortcut!r}"
        )
    num_classes = check_classes(num_classes)
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(16, 1, weight_decay, "stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x, filters, strides, shortcut, weight_decay,
                name=f"stage{stage + 1}_block{block + 1}",
            )
    outputs = classifier_head(x, num_classes, weight_decay)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def resnet20(input_shape=(32, 32, 3), num_classes=10, weight_decay=0.0,
             shortcut="A"):
    """Builds ResNet-20 for CIFAR (0.27M parameters, option-A shortcuts).

    The model of the paper's CIFAR-10 experiments. See `cifar_resnet` for the
    architecture and the meaning of the arguments.

    Args:
        input_shape: Tuple of ints. Image shape. Defaults to `(32, 32, 3)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 coefficient (gradient term `lambda * w`).
            Defaults to `0.0`.
        shortcut: `"A"` or `"B"`. Shortcut type. Defaults to `"A"`.

    Returns:
        A `keras.Model` named `"resnet20"` whose last layer `"logits"` is a
        `Dense(num_classes)` without activation.

    Example:

    >>> model = resnet20()
    >>> model.count_params(), model.layers[-1].name
    (271098, 'logits')

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return cifar_resnet(20, input_shape, num_classes, weight_decay, shortcut)
