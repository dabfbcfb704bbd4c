"""Which variables a layer-wise optimizer leaves out of a rule.

`LARS` and `LARSWrapper` let users exclude variables from the trust ratio
(and `LARS` from weight decay). An exclusion is one of

* `None`: the common practice, every variable with at most one dimension
  (biases, BatchNormalization `gamma`/`beta`, scalars) is excluded;
* a list of strings: regular expressions searched (`re.search`) in the
  variable's path (`"sequential/dense/bias"`); a plain name such as
  `"bias"` is therefore a substring match, and `[]` excludes nothing;
* a callable taking the `keras.Variable` and returning a bool.

The decision is taken once per variable when the optimizer is built, so the
compiled train step contains no name matching.
"""

import re

import keras


def check_exclusion(value, argument):
    """Validates an exclusion argument and returns its normalised form.

    Args:
        value: `None`, a string, a list/tuple of strings, or a callable.
        argument: String. The argument name, for error messages.

    Returns:
        `None`, a tuple of pattern strings, or the callable.
    """
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(pattern, str) for pattern in value
    ):
        raise ValueError(
            f"Argument `{argument}` must be None, a list of variable-name "
            "patterns (strings) or a callable taking a variable. "
            f"Received: {argument}={value!r}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"Argument `{argument}` contains an invalid regular "
                f"expression {pattern!r} ({error}). "
                f"Received: {argument}={value!r}"
            ) from None
    return tuple(value)


def is_excluded(exclusion, variable, argument):
    """Whether `variable` is excluded by a normalised `exclusion`."""
    if exclusion is None:
        return len(variable.shape) <= 1
    if callable(exclusion):
        result = exclusion(variable)
        if not isinstance(result, bool) and not (
            hasattr(result, "dtype") and str(result.dtype) == "bool"
            and getattr(result, "shape", ()) == ()
        ):
            raise TypeError(
                f"The callable passed as `{argument}` must return a bool. "
                f"Received: {result!r} for variable {variable_path(variable)!r}"
            )
        return bool(result)
    path = variable_path(variable)
    return any(re.search(pattern, path) for pattern in exclusion)


def variable_path(variable):
    """The name patterns are matched against (the path when it has one)."""
    return getattr(variable, "path", None) or variable.name


def serialize_exclusion(exclusion, argument):
    """The config value of a normalised exclusion.

    A callable serialises only when it is registered with
    `keras.saving.register_keras_serializable`; otherwise this raises rather
    than silently dropping the rule from the saved model.
    """
    if exclusion is None:
        return None
    if not callable(exclusion):
        return list(exclusion)
    name = keras.saving.get_registered_name(exclusion)
    if keras.saving.get_registered_object(name) is not exclusion:
        raise ValueError(
            f"Argument `{argument}` is a callable that is not registered as "
            "a Keras serializable object, so the optimizer config cannot "
            "describe it. Decorate it with "
            "`@keras.saving.register_keras_serializable()` or pass a list of "
            f"variable-name patterns. Received: {argument}={exclusion!r}"
        )
    return keras.saving.serialize_keras_object(exclusion)


def deserialize_exclusion(config_value, custom_objects=None):
    """Inverse of `serialize_exclusion`."""
    if isinstance(config_value, dict):
        return keras.saving.deserialize_keras_object(
            config_value, custom_objects=custom_objects
        )
    return config_value
