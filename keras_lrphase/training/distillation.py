"""A run that trains its model by distillation from a saved teacher.

`keras-lrphase train --teacher PATH.keras` trains the configured model as
the student of `keras.distillation.Distiller`, on the objective

    alpha * CE(y, s(x)) + (1 - alpha) * T^2 * KL(softmax(t(x)/T) || softmax(s(x)/T))

plus the student's L2 kernel regularisers (`RegularizedDistiller`), with
`alpha = distill_alpha` (default 0: the teacher's softened distribution
only, as in the Heuristics paper) and `T = temperature` (default 5, the
paper's). The teacher is loaded once, checked against the data before any
training, and recorded (path and SHA-256 of the file) in the run's
`summary.json` and resume marker.

`RegularizedDistiller` and `build_distiller` live in the library
(`keras_lrphase.models.distiller`); they are imported here too, under
their old path.
"""

import hashlib
import os

import keras


from keras_lrphase.models.distiller import RegularizedDistiller  # noqa: F401
from keras_lrphase.models.distiller import build_distiller  # noqa: F401
from keras_lrphase.models.distiller import check_distillation_available


def load_teacher(path):
    """Loads the teacher model saved at `path` (without its optimizer).

    Raises:
        ValueError: naming `teacher` and `path` when it cannot be loaded.
    """
    check_distillation_available()
    if not os.path.isfile(path):
        raise ValueError(
            "Argument `teacher` must be an existing model file (.keras). "
            f"Received: teacher={path!r}"
        )
    try:
        teacher = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - re-raised with the flag
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"Argument `teacher` could not be loaded as a Keras model "
            f"({type(error).__name__}: {first}). Received: teacher={path!r}"
        ) from error
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            "Argument `teacher` must hold a keras.Model; it holds a "
            f"{type(teacher).__name__}. Received: teacher={path!r}"
        )
    return teacher


def check_teacher(teacher, path, input_shape, num_classes, dtype="float32"):
    """Checks that `teacher` fits the data and the student, before training.

    Args:
        teacher: The loaded teacher.
        path: String. Its file, for the messages.
        input_shape: Tuple. The data's input shape (no batch dimension).
        num_classes: Int. The data's number of classes.
        dtype: String. The dtype of the student's logits (the compute
            dtype of the run's precision); Keras' `Distiller` needs the
            teacher's to be the same.

    Raises:
        ValueError: naming `teacher` and `path`.
    """
    inputs = keras.tree.flatten(getattr(teacher, "inputs", None) or [])
    outputs = keras.tree.flatten(getattr(teacher, "outputs", None) or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Argument `teacher` must be a Functional or Sequential model with "
            f"one input and one output; it has {len(inputs)} and "
            f"{len(outputs)}. Received: teacher={path!r}"
        )
    got = tuple(inputs[0].shape[1:])
    if got != tuple(input_shape):
        raise ValueError(
            f"Argument `teacher` must take inputs of shape {tuple(input_shape)} "
            f"(the dataset's); it takes {got}. Received: teacher={path!r}"
        )
    got = tuple(outputs[0].shape[1:])
    if got != (num_classes,):
        raise ValueError(
            f"Argument `teacher` must output {num_classes} logits per example "
            f"(the dataset's classes); its output shape is {got}. "
            f"Received: teacher={path!r}"
        )
    last = teacher.layers[-1] if teacher.layers else None
    if isinstance(last, keras.layers.Softmax) or (
            getattr(last, "activation", None) is keras.activations.softmax):
        raise ValueError(
            "Argument `teacher` must output logits; its last layer "
            f"{last.name!r} applies a softmax (distillation divides the "
            f"logits by the temperature). Received: teacher={path!r}"
        )
    got = keras.backend.standardize_dtype(outputs[0].dtype)
    if got != keras.backend.standardize_dtype(dtype):
        raise ValueError(
            f"Argument `teacher` outputs {got} logits, the student {dtype} "
            "ones (the run's precision); Keras' Distiller needs the same. "
            f"Received: teacher={path!r}"
        )


def teacher_record(path, teacher):
    """What a run records of its teacher: path, SHA-256, parameter count."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "path": os.path.abspath(path),
        "sha256": digest.hexdigest(),
        "parameters": int(teacher.count_params()),
    }
