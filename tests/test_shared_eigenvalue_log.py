"""`HessianMonitor` and `TwoPhaseLR` in one fit share the eigenvalue column.

A user gives both callbacks the same batch: every estimate either of them
computes must reach `history`, whichever comes first in `callbacks`.
"""

import math

import keras
import numpy as np
import pytest

from keras_lrphase import HessianMonitor
from keras_lrphase import TwoPhaseLR
from scripted_training import ScriptedLoss
from scripted_training import regression_data
from scripted_training import tiny_model

pytestmark = pytest.mark.backend_neutral

# Patience 1, paper rules: the loss falls until epoch 9 and is flat from
# epoch 10 -> plateau at 10 (n=11, alpha=round(11/3)=4) -> switch at 14.
# TwoPhaseLR estimates at epochs 14-15; HessianMonitor(frequency=5) at 4, 9
# and 14 (0-based: every 5th epoch).
LOSSES = [2.0 - 0.1 * e for e in range(10)] + [1.1] * 6
TWO_PHASE_EPOCHS = {14, 15}
MONITOR_EPOCHS = {4, 9, 14}


def fit(order):
    x, y = regression_data(samples=16)
    model = tiny_model(keras.optimizers.SGD(0.01))
    two_phase = TwoPhaseLR((x, y), plateau_patience=1, plateau_rule="paper",
                           decay_rule="paper")
    monitor = HessianMonitor((x, y), frequency=5)
    callbacks = [ScriptedLoss(LOSSES)] + (
        [two_phase, monitor] if order == "two-phase first" else [monitor, two_phase])
    # The scripted loss falls until epoch 10 (from 1): TwoPhaseLR notes at
    # half of the budget that it has found no plateau yet.
    with pytest.warns(UserWarning, match="TwoPhaseLR: half of the 16 epochs "
                      "have run \\(epoch 8\\) and no loss plateau"):
        history = model.fit(x, y, batch_size=8, epochs=16, verbose=0,
                            shuffle=False, callbacks=callbacks)
    return history.history, two_phase


@pytest.mark.parametrize("order", ["two-phase first", "monitor first"])
def test_every_estimate_reaches_the_history_whatever_the_order(order):
    history, two_phase = fit(order)
    assert two_phase.controller.switch_epoch == 14
    values = history["hessian_max_eigenvalue"]
    iterations = history["hessian_iterations"]
    finite = {e for e, v in enumerate(values) if math.isfinite(v)}
    assert finite == TWO_PHASE_EPOCHS | MONITOR_EPOCHS
    assert {e for e, v in enumerate(iterations) if math.isfinite(v)} == finite
    # One batch, one estimate per epoch: the dense Hessian of mse on a
    # linear model is 2/N X^T X (with the bias column), whatever the weights.
    x, _ = regression_data(samples=16)
    design = np.hstack([x, np.ones((16, 1), "float32")]).astype("float64")
    exact = np.linalg.eigvalsh(2.0 / 16 * design.T @ design)[-1]
    for epoch in finite:
        assert values[epoch] == pytest.approx(exact, rel=1e-3)


def test_the_two_orders_log_the_same_columns():
    first, _ = fit("two-phase first")
    second, _ = fit("monitor first")
    for key in ("hessian_max_eigenvalue", "hessian_iterations"):
        np.testing.assert_array_equal(np.isnan(first[key]), np.isnan(second[key]))
        np.testing.assert_allclose(np.nan_to_num(first[key]),
                                   np.nan_to_num(second[key]), rtol=1e-6)


def test_two_estimates_of_one_epoch_on_different_batches_warn():
    x, y = regression_data(samples=16)
    model = tiny_model(keras.optimizers.SGD(0.01))
    callbacks = [HessianMonitor((x, y)), HessianMonitor((x[:8], y[:8]))]
    with pytest.warns(UserWarning, match="another callback of this fit logged "
                      "`hessian_max_eigenvalue`"):
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                            callbacks=callbacks)
    # The later callback's estimate (on the first 8 samples) is logged.
    design = np.hstack([x[:8], np.ones((8, 1), "float32")]).astype("float64")
    exact = np.linalg.eigvalsh(2.0 / 8 * design.T @ design)[-1]
    assert history.history["hessian_max_eigenvalue"][-1] == pytest.approx(
        exact, rel=1e-3)
