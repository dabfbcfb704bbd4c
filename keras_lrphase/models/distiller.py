"""`RegularizedDistiller`: Keras' `Distiller` with the student's regularisers.

A model of the package that a saved model can name (registered as
`keras_lrphase>RegularizedDistiller`), and `build_distiller`, the logits
distillation of the Heuristics paper. `keras-lrphase train --teacher`
(`keras_lrphase.training.distillation`) trains with them.
"""

import keras
from keras import ops


_DISTILLER = getattr(getattr(keras, "distillation", None), "Distiller", None)


def check_distillation_available():
    """Raises a ValueError unless this Keras has `keras.distillation`."""
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
        loads after `import keras_lrphase`.
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
    check_distillation_available()
    return RegularizedDistiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=float(temperature), loss=keras.losses.KLDivergence()),
        student_loss_weight=float(alpha),
        name="distiller",
    )
