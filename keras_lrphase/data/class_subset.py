"""Some classes of a dataset, relabelled: a target task held out of training.

The transfer experiments of the Learning Stages paper (Section 5) move
models trained on one dataset to other datasets. Offline, the target can be
classes the source models never saw: train on the digits 0-4 (or five of
the CIFAR-10 classes) and transfer to the others, which have the same
image size.
"""

import dataclasses

import numpy as np


def select_classes(data, classes):
    """The examples of `classes` only, labelled `0 .. len(classes) - 1`.

    Args:
        data: An `ImageData`.
        classes: Sequence of distinct class indices of `data`, in the order
            of their new labels (`classes[k]` becomes label `k`).

    Returns:
        An `ImageData` with both splits restricted to `classes` (order of
        the examples kept) and `class_names` to theirs.

    Raises:
        ValueError: For fewer than 2 classes, repeats or unknown classes.

    Example:

    >>> from keras_lrphase.data.digits import load_digits_data
    >>> target = select_classes(load_digits_data(), [5, 6, 7, 8, 9])
    >>> target.class_names, sorted(set(target.y_train.tolist()))
    (('5', '6', '7', '8', '9'), [0, 1, 2, 3, 4])
    """
    try:
        classes = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError("Argument `classes` must be a sequence of class "
                         f"indices. Received: classes={classes!r}") from None
    if len(classes) < 2 or len(set(classes)) != len(classes) or any(
            not 0 <= c < data.num_classes for c in classes):
        raise ValueError(
            "Argument `classes` must hold at least 2 distinct class indices "
            f"in [0, {data.num_classes}). Received: classes={classes!r}")
    relabel = np.full(data.num_classes, -1, dtype=np.int32)
    relabel[classes] = np.arange(len(classes), dtype=np.int32)

    def split(x, y):
        keep = relabel[y] >= 0
        return x[keep], relabel[y[keep]]

    x_train, y_train = split(data.x_train, data.y_train)
    x_test, y_test = split(data.x_test, data.y_test)
    return dataclasses.replace(
        data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=tuple(data.class_names[c] for c in classes))
