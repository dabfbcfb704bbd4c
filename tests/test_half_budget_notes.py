"""A controller that has decided nothing by half of `fit`'s epochs says so.

And AutoDecay's default stability criterion ends the first stage of an
ordinary CNN whose training loss falls towards 0 (the paper's criterion,
relative to the window's minimum, never does there).
"""

import warnings

import keras
import pytest

from keras_lrphase import AutoDecay
from keras_lrphase import TwoPhaseLR
from scripted_training import PAPER_RULES
from scripted_training import ScriptedLoss
from scripted_training import regression_data
from scripted_training import tiny_model

pytestmark = pytest.mark.backend_neutral

# The first 60 epoch losses of small-cnn on the digits at batch 32, lr 0.05,
# no weight decay and no augmentation (keras-lrphase train --dataset digits
# --batch-size 32 --lr 0.05 --weight-decay 0 --augment none): an ordinary
# CNN whose training loss goes towards 0.
DIGITS_LOSSES = [
    1.9895, 1.1223, 0.5149, 0.2928, 0.2165, 0.1587, 0.1212, 0.093, 0.0761,
    0.0627, 0.0563, 0.0522, 0.0456, 0.0426, 0.0382, 0.0266, 0.0251, 0.0258,
    0.0193, 0.0151, 0.0211, 0.0144, 0.0125, 0.0095, 0.01, 0.0095, 0.0082,
    0.0097, 0.01, 0.0089, 0.0072, 0.0074, 0.0064, 0.0053, 0.0075, 0.0048,
    0.0046, 0.0048, 0.005, 0.0045, 0.0052, 0.0063, 0.0045, 0.0052, 0.0045,
    0.0037, 0.004, 0.004, 0.0037, 0.0044, 0.0052, 0.0046, 0.0038, 0.0033,
    0.0037, 0.0035, 0.0037, 0.0035, 0.0029, 0.003]


def fit(callback, losses, epochs):
    x, y = regression_data()
    model = tiny_model(keras.optimizers.SGD(0.001))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
                  callbacks=[ScriptedLoss(losses), callback])
    return [str(w.message) for w in caught if w.category is UserWarning]


def first_stable(losses, beta=0.9, window=5, tolerance=0.05):
    """NumPy-free reference: the 1-based epoch at which the bias-corrected
    moving average moves by less than `tolerance * g(1)` over `window`
    epochs."""
    f, g = 0.0, []
    for t, loss in enumerate(losses, start=1):
        f = beta * f + (1 - beta) * loss
        g.append(f / (1 - beta ** t))
        last = g[-window:]
        if t >= window and max(last) - min(last) < tolerance * g[0]:
            return t
    return None


def test_autodecay_defaults_end_the_first_stage_of_a_loss_going_to_zero():
    callback = AutoDecay()
    messages = fit(callback, DIGITS_LOSSES, 60)
    first = first_stable(DIGITS_LOSSES)
    second = first + first_stable(DIGITS_LOSSES[first:])
    assert (first, second) == (16, 42)
    assert callback.decay_epochs == [first, second]
    assert not any("half of the" in m for m in messages)


def test_autodecay_with_the_papers_criterion_says_so_at_half_budget():
    callback = AutoDecay(stability="paper")
    messages = fit(callback, DIGITS_LOSSES, 60)
    assert callback.decay_epochs == [] and callback.stop_epoch is None
    notes = [m for m in messages if "half of the" in m]
    assert notes == [
        "AutoDecay: half of the 60 epochs have run (epoch 30) and the first "
        "stage has not become stable: its smoothed loss still moved by 0.05 "
        "or more (relative) within every 5 epochs. A larger `tolerance` or a "
        "smaller `window` ends stages sooner."]


def test_two_phase_without_a_plateau_says_so_once_at_half_budget():
    losses = [2.0 - 0.1 * e for e in range(10)]
    callback = TwoPhaseLR(regression_data(), plateau_patience=2, **PAPER_RULES)
    messages = fit(callback, losses, 10)
    notes = [m for m in messages if "half of the" in m]
    assert len(notes) == 1
    assert notes[0].startswith(
        "TwoPhaseLR: half of the 10 epochs have run (epoch 5) and no loss "
        "plateau has been detected")


def test_no_note_once_the_controller_has_decided():
    losses = [1.0] * 10  # plateau at once
    callback = TwoPhaseLR(regression_data(), plateau_patience=2)
    messages = fit(callback, losses, 10)
    assert callback.plateau_epoch == 3
    assert not any("half of the" in m for m in messages)
