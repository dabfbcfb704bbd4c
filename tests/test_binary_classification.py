"""Binary classification as Keras users write it: a sigmoid unit, labels of
shape (N,), the loss given as a string (issue found in real programs: the
estimator's loss did not reshape the labels as Keras' compiled loss does)."""

import keras
import numpy as np
import pytest

import keras_lrphase as lrp
from hessian_references import sigmoid_cross_entropy_dense_hessian
from hessian_references import top_eigenvalue
from scripted_training import ScriptedLoss
from scripted_training import warns_nothing_learned

pytestmark = pytest.mark.backend_neutral

N, D = 64, 5


def problem(loss):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = (x[:, 0] + 0.3 * rng.normal(size=N) > 0).astype("float32")  # shape (N,)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
    return model, x, y


def exact(model, x):
    p = model.predict(x, verbose=0)
    return top_eigenvalue(sigmoid_cross_entropy_dense_hessian(x, p))


@pytest.mark.parametrize("loss", ["binary_crossentropy", "crossentropy",
                                  keras.losses.BinaryCrossentropy()])
def test_eigenvalue_of_a_sigmoid_unit_with_labels_of_rank_one(loss):
    model, x, y = problem(loss)
    result = lrp.top_hessian_eigenvalue(model, x, y, method="lanczos",
                                        tolerance=1e-8, seed=0)
    assert result.value == pytest.approx(exact(model, x), rel=1e-5)


def test_two_phase_and_monitor_train_a_binary_classifier():
    model, x, y = problem("binary_crossentropy")
    with warns_nothing_learned():  # a flat scripted loss: switch at once
        history = model.fit(
            x, y, batch_size=16, epochs=4, verbose=0,
            callbacks=[ScriptedLoss([1.0] * 4),
                       lrp.TwoPhaseLR((x, y), plateau_patience=1,
                                      extra_epochs_fraction=0.0,
                                      eigen_kwargs={"method": "lanczos",
                                                    "tolerance": 1e-8}),
                       lrp.HessianMonitor((x, y), method="lanczos",
                                          tolerance=1e-8)])
    assert history.history["lrphase_phase"] == [0, 0, 1, 1]
    assert history.history["hessian_max_eigenvalue"][-1] == pytest.approx(
        exact(model, x), rel=1e-5)


def test_a_model_with_two_outputs_is_refused_before_training():
    inputs = keras.Input((D,))
    model = keras.Model(inputs, [keras.layers.Dense(1, name="a")(inputs),
                                 keras.layers.Dense(1, name="b")(inputs)])
    model.compile("sgd", loss="mse")
    x = np.zeros((8, D), "float32")
    y = np.zeros((8, 1), "float32")
    with pytest.raises(ValueError, match="single-output models.*2 outputs"):
        model.fit(x, (y, y), epochs=1, verbose=0,
                  callbacks=[lrp.TwoPhaseLR((x, y))])
