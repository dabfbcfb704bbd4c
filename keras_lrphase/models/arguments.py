"""What the model builders share: argument checks, the regularizer, the head."""

import keras


def check_classes(num_classes):
    """`num_classes` as an int, or a ValueError naming it.

    Raises:
        ValueError: `num_classes` is not an integer >= 2.
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(
            "Argument `num_classes` must be an integer >= 2. "
            f"Received: num_classes={num_classes}"
        )
    return int(num_classes)


def weight_decay_regularizer(weight_decay):
    """The Keras regularizer whose gradient is `weight_decay * w`, or None.

    Raises:
        ValueError: `weight_decay` is negative.
    """
    # `weight_decay` is the coefficient lambda of the gradient term lambda * w
    # (the paper's and PyTorch's SGD convention); Keras' L2(l) adds
    # l * sum(w**2) to the loss, whose gradient is 2 * l * w.
    if weight_decay < 0:
        raise ValueError(
            "Argument `weight_decay` must be >= 0. "
            f"Received: weight_decay={weight_decay}"
        )
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def classifier_head(x, num_classes, weight_decay):
    """Global average pooling (`"pool"`) and the Dense `"logits"` layer."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(
        num_classes, kernel_initializer="he_normal",
        kernel_regularizer=weight_decay_regularizer(weight_decay),
        name="logits",
    )(x)
