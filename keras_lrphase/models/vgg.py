"""A small VGG with a fully-connected stack, for the warmup experiments."""

import keras
from keras import layers

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import weight_decay_regularizer


def small_vgg(
    input_shape=(32, 32, 3),
    num_classes=10,
    weight_decay=0.0,
    blocks=((32,), (64,), (128,), (128,)),
    dense=(128, 128),
    batch_norm=True,
    name="vgg_small",
):
    """Builds a VGG-style network: 3x3 convolution blocks, then a Dense stack.

    Each block of `blocks` is a list of 3x3 convolutions (`"same"` padding),
    each followed by batch normalisation (or a bias, with
    `batch_norm=False`) and a ReLU, then a 2x2 max pooling; the maps are
    flattened and go through `Dense(units, relu)` for each entry of
    `dense`, then `Dense(num_classes)` named `"logits"` (no activation):
    the fully-connected stack, without normalisation, as in VGG. Layers are
    named `conv1`, `bn1`, `relu1`, `pool1`, ..., `fc1`, `fc2`, ...,
    `logits`. The default is the Heuristics paper's VGG-11 on CIFAR-10
    (Section 4) in miniature: 4 convolutions of 32-128 filters instead of
    8 of 64-512, and the three-layer fully-connected stack that the paper
    finds warmup protects from large early changes (`FreezeLayers` freezes
    it). About 13M multiply-adds per 32x32 image, as ResNet-8 (`vgg-small`
    in `get_model`).

    Args:
        input_shape: Tuple of ints. Image shape. Defaults to `(32, 32, 3)`.
        num_classes: Int. Number of output logits. Defaults to `10`.
        weight_decay: Float. L2 coefficient `lambda` of the gradient term
            `lambda * w`, on every kernel. Defaults to `0.0`.
        blocks: Sequence of sequences of ints. Filters of the convolutions
            of each block; each block ends with a 2x2 max pooling. Defaults
            to `((32,), (64,), (128,), (128,))`.
        dense: Sequence of ints. Units of the hidden Dense layers (ReLU).
            Defaults to `(128, 128)`.
        batch_norm: Bool. Batch normalisation after each convolution.
            Defaults to `True`.
        name: String. Model name. Defaults to `"vgg_small"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> model = small_vgg()
    >>> model.count_params()
    325354
    >>> [layer.name for layer in model.layers
    ...  if isinstance(layer, keras.layers.Dense)]
    ['fc1', 'fc2', 'logits']

    References:
        Simonyan & Zisserman, "Very Deep Convolutional Networks for
        Large-Scale Image Recognition", ICLR 2015. Gotmare et al., "A Closer
        Look at Deep Learning Heuristics: Learning Rate Restarts, Warmup and
        Distillation", ICLR 2019, Section 4 (VGG-11, Figures 4 and 5).
    """
    blocks = tuple(tuple(int(f) for f in block) for block in blocks)
    dense = tuple(int(u) for u in dense)
    if not blocks or not all(blocks) or min(min(b) for b in blocks) < 1:
        raise ValueError(
            "Argument `blocks` must be a non-empty sequence of non-empty "
            f"sequences of positive ints. Received: blocks={blocks}"
        )
    if any(u < 1 for u in dense):
        raise ValueError(
            "Argument `dense` must be a sequence of positive ints. "
            f"Received: dense={dense}"
        )
    num_classes = check_classes(num_classes)
    regularizer = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x, count = inputs, 0
    for b, block in enumerate(blocks):
        for filters in block:
            count += 1
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=not batch_norm,
                kernel_initializer="he_normal", kernel_regularizer=regularizer,
                name=f"conv{count}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                              name=f"bn{count}")(x)
            x = layers.Activation("relu", name=f"relu{count}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{b + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense):
        x = layers.Dense(
            units, activation="relu", kernel_initializer="he_normal",
            kernel_regularizer=regularizer, name=f"fc{i + 1}",
        )(x)
    outputs = layers.Dense(
        num_classes, kernel_initializer="he_normal",
        kernel_regularizer=regularizer, name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=name)
