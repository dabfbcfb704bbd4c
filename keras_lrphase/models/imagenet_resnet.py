"""ResNet-50 for ImageNet as the two-phase paper trains it (Appendix A.2).

The bottleneck ResNet of He et al. (2016) with the two changes of the
paper: the last batch-normalisation gamma of every residual block starts at
zero (each block starts as the identity, as in Goyal et al. 2017), and the
bias of the last fully-connected layer is L2-regularised like the weights.

Built here rather than taken from `keras.applications.ResNet50(weights=None)`
and patched, because both changes must exist when the weights are created:
Keras 3 attaches a regulariser to a weight only in `add_weight`, and an
initializer set at construction also holds for the saved model's config.
The block is ResNet "v1.5" (the stride of a downsampling block on its 3x3
convolution, as in Goyal et al.'s and TensorFlow's official ResNet-50; the
parameters are the same as with the stride on the 1x1), without convolution
biases (each convolution feeds a batch normalisation).
"""

import keras
from keras import layers

from keras_lrphase.models.arguments import check_classes
from keras_lrphase.models.arguments import weight_decay_regularizer

# (blocks, bottleneck filters) of the four stages; outputs are 4x filters.
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


def _conv(filters, size, strides, weight_decay, name):
    return layers.Conv2D(
        filters, size, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=weight_decay_regularizer(weight_decay), name=name)


def _bn(name, zero_gamma=False):
    return layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, name=name,
        gamma_initializer="zeros" if zero_gamma else "ones")


def _bottleneck(x, filters, strides, weight_decay, zero_gamma, name):
    y = _conv(filters, 1, 1, weight_decay, f"{name}_conv1")(x)
    y = layers.Activation("relu", name=f"{name}_relu1")(_bn(f"{name}_bn1")(y))
    y = _conv(filters, 3, strides, weight_decay, f"{name}_conv2")(y)
    y = layers.Activation("relu", name=f"{name}_relu2")(_bn(f"{name}_bn2")(y))
    y = _conv(4 * filters, 1, 1, weight_decay, f"{name}_conv3")(y)
    y = _bn(f"{name}_bn3", zero_gamma)(y)
    if strides != 1 or x.shape[-1] != 4 * filters:
        x = _conv(4 * filters, 1, strides, weight_decay, f"{name}_shortcut_conv")(x)
        x = _bn(f"{name}_shortcut_bn")(x)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def imagenet_resnet50(input_shape=(224, 224, 3), num_classes=1000,
                      weight_decay=0.0, zero_init_residual=True,
                      name="imagenet_resnet50"):
    """Builds ResNet-50 for ImageNet with the two-phase paper's changes.

    A 7x7/2 convolution with 64 filters and a 3x3/2 max pooling, four stages
    of 3, 4, 6 and 3 bottleneck blocks (1x1, 3x3, 1x1 convolutions with
    64/128/256/512 filters and a 4x wider output; batch normalisation after
    each; a 1x1 projection where the shape changes), the last three stages
    starting with stride 2; global average pooling and a `Dense(num_classes)`
    layer named `"logits"` (initialised from N(0, 0.01^2), as in Goyal et
    al.) that outputs logits. 25,557,032 trainable parameters at 1000
    classes, as He et al.'s.

    Args:
        input_shape: Tuple of ints. Image shape. Defaults to `(224, 224, 3)`.
        num_classes: Int. Number of output logits. Defaults to `1000`.
        weight_decay: Float. L2 coefficient `lambda` of the gradient term
            `lambda * w`, on every convolution kernel and on the kernel
            *and bias* of `"logits"` (Appendix A.2: the last layer's bias is
            regularised like the weights); batch-normalisation parameters
            are not regularised. Defaults to `0.0`.
        zero_init_residual: Bool. Start the gamma of the last batch
            normalisation of every block (`*_bn3`) at 0. Defaults to `True`.
        name: String. Model name. Defaults to `"imagenet_resnet50"`.

    Returns:
        A `keras.Model` mapping images to `num_classes` logits.

    Example:

    >>> model = imagenet_resnet50((32, 32, 3), num_classes=10)
    >>> sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    23528522
    >>> float(keras.ops.max(keras.ops.abs(
    ...     model.get_layer("stage1_block1_bn3").gamma)))
    0.0

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in
        1 Hour", 2017 (zero gamma); "Achieving Small-Batch Accuracy with
        Large-Batch Scalability via Adaptive Learning Rate Adjustment"
        (ICLR 2022 submission), Appendix A.2.
    """
    num_classes = check_classes(num_classes)
    if not isinstance(zero_init_residual, bool):
        raise ValueError(
            "Argument `zero_init_residual` must be True or False. "
            f"Received: zero_init_residual={zero_init_residual!r}"
        )
    regularizer = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(64, 7, 2, weight_decay, "stem_conv")(inputs)
    x = layers.Activation("relu", name="stem_relu")(_bn("stem_bn")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (blocks, filters) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, filters, strides, weight_decay,
                            zero_init_residual,
                            name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=regularizer, bias_regularizer=regularizer,
        name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
