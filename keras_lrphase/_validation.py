"""Argument checks shared by the package's constructors."""

import numbers


def check_integer(name, value, minimum):
    """Returns `value` as an int, or a ValueError naming the argument.

    Booleans are refused: `True` is an `int` in Python but never a count.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return int(value)
