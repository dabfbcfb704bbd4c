"""Argument checks shared by the package's constructors.

One rule for every public constructor and function: a bad argument raises
`ValueError` naming the argument and the value received, in Keras' words
(``Argument `x` must be ... Received: x=...``), before any training work.
Booleans are never numbers here (`True` is an `int` in Python, but never a
count, a rate or a tolerance); NumPy scalars are numbers.
"""

import math
import numbers
import os

_FLOAT32_TINY = 1.1754944e-38
_FLOAT32_MAX = 3.4028235e38


def fail(name, value, requirement):
    """Raises the package's `ValueError` for argument `name`."""
    raise ValueError(
        f"Argument `{name}` {requirement}. Received: {name}={value!r}"
    )


def check_integer(name, value, minimum, maximum=None):
    """Returns `value` as an int in [minimum, maximum], or raises."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, value, f"must be an integer {bounds}")
    if value < minimum or (maximum is not None and value > maximum):
        fail(name, value, f"must be an integer {bounds}")
    return int(value)


def check_optional_integer(name, value, minimum):
    """`check_integer`, with `None` passed through."""
    return None if value is None else check_integer(name, value, minimum)


def check_number(
    name,
    value,
    *,
    minimum=None,
    maximum=None,
    exclusive_minimum=False,
    exclusive_maximum=False,
):
    """Returns `value` as a finite float within the bounds, or raises.

    Args:
        name: String. The argument's name, for the message.
        value: The value received.
        minimum: Float or None. Lower bound.
        maximum: Float or None. Upper bound.
        exclusive_minimum: Bool. Whether the lower bound is excluded.
        exclusive_maximum: Bool. Whether the upper bound is excluded.
    """
    requirement = _describe_bounds(
        minimum, maximum, exclusive_minimum, exclusive_maximum
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, value, f"must be a finite number{requirement}")
    number = float(value)
    if not math.isfinite(number):
        fail(name, value, f"must be a finite number{requirement}")
    too_low = minimum is not None and (
        number <= minimum if exclusive_minimum else number < minimum
    )
    too_high = maximum is not None and (
        number >= maximum if exclusive_maximum else number > maximum
    )
    if too_low or too_high:
        fail(name, value, f"must be a finite number{requirement}")
    return number


def check_positive(name, value, requirement=None):
    """A finite number > 0 (a learning rate, a tolerance).

    `requirement` words the error instead of "must be a finite number > 0"
    (the command line's options say "must be a positive number").
    """
    try:
        return check_number(name, value, minimum=0.0, exclusive_minimum=True)
    except ValueError:
        if requirement is None:
            raise
    fail(name, value, requirement)


def check_fraction(name, value):
    """A number in the open interval (0, 1) (a decay factor).

    It must also be a positive float32 (the dtype of learning rates): a
    factor below 1.2e-38 would make the learning rate exactly 0.
    """
    number = check_number(
        name, value, minimum=0.0, maximum=1.0,
        exclusive_minimum=True, exclusive_maximum=True,
    )
    if number < _FLOAT32_TINY:
        fail(name, value, f"must be at least {_FLOAT32_TINY:.3g} (a float32)")
    return number


def check_learning_rate(name, value):
    """A positive learning rate that float32 holds (not 0, not inf)."""
    number = check_positive(name, value)
    if not _FLOAT32_TINY <= number <= _FLOAT32_MAX:
        fail(name, value, "must be a positive number that float32 can hold")
    return number


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`, or raises."""
    if not isinstance(value, str) or value not in choices:
        fail(name, value, f"must be one of {list(choices)}")
    return value


def check_bool(name, value):
    """Returns `value` if it is a bool, or raises (no truthiness)."""
    if not isinstance(value, bool):
        fail(name, value, "must be True or False")
    return value


def check_verbose(value):
    """The `verbose` argument of the package's callbacks: 0 or 1."""
    if isinstance(value, bool) or value not in (0, 1):
        fail("verbose", value, "must be 0 or 1")
    return int(value)


def check_name(name, value):
    """A non-empty string (a monitored log key, a layer name)."""
    if not isinstance(value, str) or not value:
        fail(name, value, "must be a non-empty string")
    return value


def check_path(name, value):
    """A path-like or None, returned as a string or None."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        fail(name, value, "must be a path or None")
    return os.fspath(value)



def check_existing_folder(name, value):
    """Raises unless `value` is a folder that exists."""
    if not os.path.isdir(value):
        fail(name, value, "must be an existing folder")


def check_folder_usable(name, value, folder, requirement="must be in a folder"):
    """Raises unless `folder` is, or can be made, a writable folder.

    Catches at construction what would otherwise fail at the first save,
    after epochs were spent: the folder, or a folder above it, is a regular
    file, or the nearest existing folder above it is not writable.

    Args:
        name: String. The argument's name, for the message.
        value: The value received (named in the message).
        folder: String. The folder the argument writes into.
        requirement: String. The start of the message, after the name.
    """
    path = os.path.abspath(folder or os.curdir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        fail(name, value, f"{requirement}: {path!r} is a file")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(name, value, f"{requirement} that can be written: {path!r} is not writable")

def check_seed(name, value):
    """An integer seed >= 0 or None."""
    return None if value is None else check_integer(name, value, 0)


def _describe_bounds(minimum, maximum, exclusive_minimum, exclusive_maximum):
    if minimum is not None and maximum is not None:
        left = "(" if exclusive_minimum else "["
        right = ")" if exclusive_maximum else "]"
        return f" in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f" {'>' if exclusive_minimum else '>='} {minimum:g}"
    if maximum is not None:
        return f" {'<' if exclusive_maximum else '<='} {maximum:g}"
    return ""
