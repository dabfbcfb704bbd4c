"""The one large batch a Hessian estimate is computed on."""

import sys

import keras
import numpy as np


def first_batch(data, name="data"):
    """Returns `(x, y)` as NumPy nests from `(x, y)` or a `tf.data.Dataset`.

    Args:
        data: A tuple `(x, y)` of arrays (or nests of arrays), or a
            `tf.data.Dataset` yielding `(x, y)` batches, of which the first
            batch is used. Sample weights, if present, are ignored.
        name: String. The caller's argument name, used in error messages.

    Returns:
        A tuple `(x, y)` of NumPy arrays (or nests of them).
    """
    if _is_dataset(data):
        for element in data.take(1):
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError(
                    f"Argument `{name}` must yield `(x, y)` batches. "
                    f"Received an element of type {type(element).__name__}."
                )
            data = (element[0], element[1])
            break
        else:
            raise ValueError(f"Argument `{name}` is an empty dataset.")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"Argument `{name}` must be a tuple `(x, y)` or a tf.data.Dataset. "
            f"Received: {name} of type {type(data).__name__}"
        )
    return as_arrays(data[0]), as_arrays(data[1])


def as_arrays(part):
    """Arrays of a nest; a list of numbers or of lists is one array."""
    if isinstance(part, (list, tuple)) and part and all(
        isinstance(item, (list, tuple, int, float, np.number)) for item in part
    ):
        return np.asarray(part)
    return keras.tree.map_structure(np.asarray, part)


def validate_batch(x, y):
    """Checks that `x` and `y` form one non-empty, finite batch.

    Returns:
        The batch size.
    """
    sizes = set()
    for name, part in (("x", x), ("y", y)):
        for array in keras.tree.flatten(part):
            array = np.asarray(array)
            if array.ndim == 0:
                raise ValueError(
                    f"Argument `{name}` must have a batch dimension. "
                    f"Received a scalar: {name}={array}"
                )
            sizes.add(array.shape[0])
            if np.issubdtype(array.dtype, np.floating) and not np.all(
                np.isfinite(array)
            ):
                raise ValueError(
                    f"Argument `{name}` contains non-finite values (NaN or "
                    f"inf): {int(np.sum(~np.isfinite(array)))} of "
                    f"{array.size} entries."
                )
    if len(sizes) != 1:
        raise ValueError(
            "Arguments `x` and `y` must have the same batch size. "
            f"Received batch sizes: {sorted(sizes)}"
        )
    (size,) = sizes
    if size == 0:
        raise ValueError("Arguments `x` and `y` are an empty batch (0 samples).")
    return size


def _is_dataset(data):
    # A `tf.data.Dataset` exists only once TensorFlow is imported; checking
    # `sys.modules` keeps the JAX and torch backends from importing it.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)
