"""One model's eigenvalue on batches that trace differently, on every backend.

The compiled products are kept per model; a batch whose targets (or inputs)
have another rank or dtype traces them anew instead of generalising the
first trace (TensorFlow's `reduce_retracing` relaxed `(N, 1)` and `(N,)` to
a shape of unknown rank, which Keras' losses cannot handle).
"""

import keras
import numpy as np
import pytest

from hessian_references import mse_dense_hessian
from hessian_references import top_eigenvalue
from keras_lrphase import HessianMonitor
from keras_lrphase import TwoPhaseLR
from keras_lrphase import top_hessian_eigenvalue
from scripted_training import warns_nothing_learned

pytestmark = pytest.mark.backend_neutral

N, D = 24, 3


def linear_regression():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(N, D)).astype("float32")
    t = np.random.default_rng(1).normal(size=N).astype("float32")
    # A linear model under MSE: H = 2/N A^T A whatever the weights.
    return model, x, t, top_eigenvalue(mse_dense_hessian(x, 1))


def test_targets_of_another_rank_on_the_same_model():
    model, x, t, exact = linear_regression()
    values = [
        top_hessian_eigenvalue(model, x, targets, loss="mse", method="lanczos",
                               tolerance=1e-8, seed=0).value
        for targets in (t[:, None], t, t[:, None], t.astype("float64"))
    ]
    np.testing.assert_allclose(values, [exact] * 4, rtol=1e-5)


def test_two_phase_lr_and_a_monitor_on_targets_of_another_rank():
    # TwoPhaseLR((x, y2d)) next to HessianMonitor((x, y1d)): the monitor
    # estimates from epoch 0 on, the controller from its switch epoch
    # (the loss never improves at a learning rate of 0: plateau at epoch 1,
    # switch at epoch 2), where it failed after the epochs were spent.
    model, x, t, exact = linear_regression()
    controller = TwoPhaseLR((x, t[:, None]), plateau_patience=1,
                            eigen_kwargs={"method": "lanczos",
                                          "tolerance": 1e-8})
    monitor = HessianMonitor((x, t), method="lanczos", tolerance=1e-8)
    # Nothing is learned at a learning rate of 0 (so it says), and the two
    # callbacks' batches differ in the targets' rank: the controller's
    # estimate replaces the monitor's in the logs (the same value).
    with warns_nothing_learned(), pytest.warns(
            UserWarning, match="TwoPhaseLR: at epoch 3 another callback of "
            "this fit logged `hessian_max_eigenvalue`"):
        model.fit(x, t, batch_size=8, epochs=4, verbose=0, shuffle=False,
                  callbacks=[monitor, controller])
    assert controller.controller.state.switch_epoch is not None
    assert controller.providers[0].last_result.value == pytest.approx(exact, rel=1e-5)
    assert monitor.last_result.value == pytest.approx(exact, rel=1e-5)
