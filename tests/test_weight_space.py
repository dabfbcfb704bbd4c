"""How the weight-space tools score accuracy for a one-unit output: from
the loss the user gave, compiled or passed explicitly."""

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.weight_space import accuracy_kind
from keras_lrphase.backend import keras_compat

pytestmark = pytest.mark.backend_neutral


def _model(units):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])


@pytest.mark.parametrize("loss, kind", [
    (keras.losses.BinaryCrossentropy(from_logits=True), "binary_logits"),
    (keras.losses.BinaryCrossentropy(), "binary"),
    ("binary_crossentropy", "binary"),
])
def test_one_unit_kind_comes_from_an_explicit_loss(loss, kind):
    # The model is not compiled: only the loss given to the tool says
    # whether its output is a logit.
    model = _model(1)
    loss_object = keras_compat.compiled_loss(model, loss)
    y = np.array([0, 1, 1], "float32")
    assert accuracy_kind(model, loss_object, np.zeros((3, 3)), y) == kind


def test_one_unit_kind_comes_from_the_compiled_loss():
    model = _model(1)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    y = np.array([0, 1, 1], "float32")
    loss_object = keras_compat.compiled_loss(model)
    assert accuracy_kind(model, loss_object, np.zeros((3, 3)), y) == "binary_logits"


@pytest.mark.parametrize("y, kind", [
    (np.array([0, 2, 1]), "sparse"),
    (np.eye(3)[[0, 2, 1]], "categorical"),
    (np.zeros((3, 2)), None),
])
def test_several_units_kind_comes_from_the_labels(y, kind):
    model = _model(3)
    loss_object = keras_compat.compiled_loss(model, "mse")
    assert accuracy_kind(model, loss_object, np.zeros((3, 3)), y) == kind


def test_user_losses_flattens_what_the_user_gave():
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    assert keras_compat.user_losses(None) == []
    assert keras_compat.user_losses(keras_compat.compiled_loss(None, bce)) == [bce]
    assert keras_compat.user_losses(
        keras_compat.compiled_loss(None, {"a": bce, "b": "mse"})) == [bce, "mse"]
