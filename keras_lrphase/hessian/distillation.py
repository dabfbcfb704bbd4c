"""The loss a distilled student trains on, as a function of its outputs.

A `keras.distillation.Distiller` wraps a frozen teacher and the student
being trained; `fit` minimises

    alpha * student_loss(y, s(x)) + (1 - alpha) * sum_i w_i * L_i(t(x), s(x))

(`alpha` is the Distiller's `student_loss_weight`, `L_i` its distillation
losses with weights `w_i`, `t` the teacher, `s` the student). The Hessian
eigenvalue of a Distiller is that of the student's layer under this
objective, the loss `fit` descends and `logs["loss"]` reports: the
curvature that bounds a stable learning rate is that of the loss the
optimizer follows, and the two-phase rule compares the eigenvalue's rises
with those of that same loss. The student's hard-label loss alone is
available by passing `loss=` to the estimator.

The teacher does not depend on the student's weights, so its outputs are
computed once per estimate (`targets`) and enter as constants; each
Hessian-vector product runs through the student's head only.
"""

import keras
from keras import ops

from keras_lrphase.backend import keras_compat

FINAL_OUTPUT = "final_output"


class StudentObjective:
    """A Distiller's training objective as a loss `loss(targets, y_pred)`.

    `targets` is `(y, teacher_features)` as `targets(x, y)` returns it;
    `y_pred` the student's output. The value equals the Distiller's
    `compute_loss` on the same batch (with the student's output in the same
    mode). A `FeatureDistillation` term on an intermediate student layer
    enters only when that layer lies before the measured one: it is then
    constant in the measured weights, has no curvature there and is left
    out; otherwise the estimate is refused (it would need the student's
    inner features in each product).

    Args:
        distiller: A compiled `keras.distillation.Distiller`.
        layer: The student layer whose weights the Hessian is taken in, or
            None for all the student's trainable weights.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import top_hessian_eigenvalue
    >>> from keras.distillation import Distiller, LogitsDistillation
    >>> def net(name):
    ...     return keras.Sequential([keras.Input((3,)), keras.layers.Dense(
    ...         2, kernel_initializer="zeros", name=f"{name}_logits")], name=name)
    >>> distiller = Distiller(net("teacher"), net("student"), LogitsDistillation(
    ...     temperature=4.0, loss=keras.losses.KLDivergence()),
    ...     student_loss_weight=0.25)
    >>> distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x = np.eye(3, dtype="float32"); y = np.array([0, 1, 1])
    >>> result = top_hessian_eigenvalue(distiller, x, y, method="lanczos", seed=0)
    >>> result.layer, round(result.value, 4)  # 1/2 * 4/3 at zero logits
    ('student_logits', 0.6667)

    References:
        Gotmare, Keskar, Xiong, Socher, "A Closer Look at Deep Learning
        Heuristics: Learning Rate Restarts, Warmup and Distillation",
        ICLR 2019, Section 5 (distillation with a temperature of 5).
    """

    def __init__(self, distiller, layer):
        student_loss = keras_compat.distiller_student_loss(distiller)
        if student_loss is None:
            raise ValueError(
                f"Distiller {distiller.name!r} is not compiled: call "
                "`distiller.compile(optimizer=..., loss=...)` before "
                "estimating its student's Hessian."
            )
        self.distiller = distiller
        self.alpha = float(distiller.student_loss_weight)
        self.student_loss = student_loss
        self.terms = []
        for loss, weight in zip(distiller.distillation_losses,
                                distiller.distillation_loss_weights):
            teacher_name = getattr(loss, "teacher_layer_name", None)
            student_name = getattr(loss, "student_layer_name", None)
            if teacher_name is not None and student_name is not None:
                if _depends_on(distiller.student, student_name, layer):
                    measured = "all weights" if layer is None else repr(layer.name)
                    raise ValueError(
                        f"{type(loss).__name__} of Distiller "
                        f"{distiller.name!r} compares the student layer "
                        f"{student_name!r}, which depends on the measured "
                        f"weights ({measured}): its curvature there is not "
                        "estimated. Measure a layer after it (`layer=`), or "
                        "pass `loss=` for the student's hard-label loss."
                    )
                continue
            self.terms.append((loss, float(weight), teacher_name or FINAL_OUTPUT))

    def targets(self, x, y):
        """`(y, teacher_features)`: the labels and the teacher's outputs on `x`."""
        features = keras_compat.distiller_teacher_features(
            self.distiller, keras.tree.map_structure(ops.convert_to_tensor, x)
        )
        needed = sorted({key for _, _, key in self.terms})
        return y, {key: features[key] for key in needed}

    def __call__(self, targets, y_pred):
        y, teacher = targets
        student_loss = 0.0
        if self.alpha > 0.0:
            values = keras.tree.flatten(keras.tree.map_structure(
                lambda loss, truth, prediction: loss(truth, prediction),
                self.student_loss, y, y_pred,
            ))
            student_loss = (
                ops.sum(ops.stack(values)) if len(values) > 1 else values[0]
            )
            if len(ops.shape(student_loss)) > 0:
                student_loss = ops.mean(student_loss)
        distillation_loss = 0.0
        if self.alpha < 1.0:
            for loss, weight, key in self.terms:
                distillation_loss = ops.add(distillation_loss, ops.multiply(
                    weight, loss.compute_loss(teacher[key], y_pred)))
        return ops.add(
            ops.multiply(self.alpha, student_loss),
            ops.multiply(1.0 - self.alpha, distillation_loss),
        )


def student_layer(distiller, layer):
    """Checks that `layer` (None, "all", a name or a layer) is the student's.

    Returns:
        `layer` unchanged.

    Raises:
        ValueError: when `layer` is (or names) a layer of the teacher.
    """
    if layer is None or (isinstance(layer, str) and layer == "all"):
        return layer
    student, teacher = distiller.student, distiller.teacher
    student_names = [candidate.name for candidate in student.layers]
    if isinstance(layer, str):
        in_teacher = layer not in student_names and any(
            candidate.name == layer for candidate in all_layers(teacher))
    else:
        in_teacher = layer is teacher or any(
            candidate is layer for candidate in all_layers(teacher))
    if in_teacher:
        name = layer if isinstance(layer, str) else layer.name
        raise ValueError(
            f"Argument `layer` is a layer of the teacher of Distiller "
            f"{distiller.name!r}, which is frozen: the Hessian is that of the "
            f"student's loss in the student's weights. Received: "
            f"layer={name!r}; the student's layers are {student_names}"
        )
    return layer


def all_layers(model):
    """The model's layers, nested models' layers included, in order."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def _depends_on(student, name, layer):
    """Whether the output of the student's layer `name` depends on `layer`."""
    if layer is None:
        return True
    feature = student.get_layer(name)
    if feature is layer:
        return True
    pending, seen = [feature.output], set()
    while pending:
        call = keras_compat.producing_call(pending.pop())
        if call is None:
            continue
        producer, inputs = call
        if producer is layer:
            return True
        if id(producer) not in seen:
            seen.add(id(producer))
            pending.extend(inputs)
    return False
