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
"""

import hashlib
import os

import keras
from keras import ops


_DISTILLER = getattr(getattr(keras, "distillation", None), "Distiller", None)


def _check_keras():
    if _DISTILLER is None:
        raise ValueError(
            "Argument `teacher` needs keras.distillation (Keras >= 3.12); "
            f"this Keras is {keras.__version__}."
        )


if _DISTILLER is not None:

    @keras.saving.register_keras_serializable(package="keras_lrphase")
    class RegularizedDistiller(_DISTILLER):
        """Keras' `Distiller`, with the student's regularisation terms.

        `Distiller.compute_loss` (Keras 3.15) returns the distillation
        objective without `model.losses`, so the student's kernel
        regularisers (the runner's weight decay) would silently stop
        acting. This subclass adds them, as Keras' own `compute_loss` does
        for any other model; everything else is `Distiller`'s. A saved one
        loads after `import keras_lrphase.training.distillation`.
        """

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            total = super().compute_loss(x, y, y_pred, sample_weight,
                                         training=training)
            for loss in self.losses:
                total = ops.add(total, ops.cast(ops.sum(loss), total.dtype))
            return total

else:  # pragma: no cover - Keras < 3.12
    RegularizedDistiller = None


def load_teacher(path):
    """Loads the teacher model saved at `path` (without its optimizer).

    Raises:
        ValueError: naming `teacher` and `path` when it cannot be loaded.
    """
    _check_keras()
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


def build_distiller(teacher, student, alpha, temperature):
    """The `RegularizedDistiller` of `student` from `teacher` (not compiled).

    Logits distillation with `keras.losses.KLDivergence()` on the softmax of
    logits / `temperature`, scaled by `temperature**2`. (Keras' default,
    the string `"kl_divergence"`, resolves to a function that
    `LogitsDistillation` applies to the scaled logits themselves rather
    than to their softmax.)

    Example:

    >>> import keras
    >>> from keras_lrphase.models import get_model
    >>> teacher = get_model("small-cnn", (8, 8, 1), 10)
    >>> student = get_model("small-cnn", (8, 8, 1), 10)
    >>> distiller = build_distiller(teacher, student, 0.0, 5.0)
    >>> distiller.student is student, teacher.trainable
    (True, False)

    References:
        Gotmare, Keskar, Xiong, Socher, "A Closer Look at Deep Learning
        Heuristics: Learning Rate Restarts, Warmup and Distillation",
        ICLR 2019, Section 5.
    """
    _check_keras()
    return RegularizedDistiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=float(temperature), loss=keras.losses.KLDivergence()),
        student_loss_weight=float(alpha),
        name="distiller",
    )
