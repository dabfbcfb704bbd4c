import json
import math
import warnings

import pytest

from keras_lrphase.controllers import TwoPhaseController
from keras_lrphase.controllers import TwoPhaseState
from scripted_training import TRACE_A
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_LOSSES

pytestmark = pytest.mark.backend_neutral

NAN = float("nan")


def run(controller, losses, eigenvalues=None, start=0):
    """Steps `controller`; eigenvalues is a dict epoch -> value (given only
    when wanted). Returns (factors, wanted epochs)."""
    eigenvalues = eigenvalues or {}
    factors, wanted = [], []
    for epoch, loss in enumerate(losses, start=start):
        h = None
        if controller.wants_eigenvalue(epoch):
            wanted.append(epoch)
            h = eigenvalues[epoch]
        factors.append(controller.step(epoch, loss, h))
    return factors, wanted


def trace_a_eigenvalues():
    return {6 + i: h for i, h in enumerate(TRACE_A_EIGENVALUES)}


def test_trace_a_plateau_switch_and_decays():
    c = TwoPhaseController(12, plateau_patience=2)
    phases = []
    factors = []
    for epoch, loss in enumerate(TRACE_A_LOSSES):
        h = trace_a_eigenvalues()[epoch] if c.wants_eigenvalue(epoch) else None
        assert c.wants_eigenvalue(epoch) == (epoch >= 6)
        factors.append(c.step(epoch, loss, h))
        phases.append(c.phase)
    assert c.plateau_epoch == TRACE_A["plateau_epoch"] == 4
    assert c.switch_epoch == TRACE_A["switch_epoch"] == 6
    assert c.decay_epochs == TRACE_A["decay_epochs"] == [7, 9]
    assert factors == [1.0] * 7 + [0.5, 1.0, 0.5, 1.0, 1.0]
    assert phases == ["exploration"] * 6 + ["convergence"] * 6
    assert c.lr_factor == 0.25
    # Epoch 10 only re-armed h0 after the decay at 9; epoch 11 re-armed it
    # again (loss rose, eigenvalue fell).
    assert (c.state.h0, c.state.f0) == (0.9, 0.76)
    assert c.next_epoch == 12


def test_plateau_never_found():
    c = TwoPhaseController(10, plateau_patience=2)
    losses = [1.0 - 0.1 * i for i in range(10)]
    factors, wanted = run(c, losses)
    assert factors == [1.0] * 10
    assert wanted == []
    assert (c.plateau_epoch, c.switch_epoch, c.decay_epochs) == (None, None, [])
    assert c.phase == "exploration"
    assert c.state.best == pytest.approx(0.1) and c.state.wait == 0


def test_min_delta_small_improvements_do_not_count():
    c = TwoPhaseController(10, plateau_patience=2, min_delta=0.1)
    # 0.95 and 0.92 are not below best - min_delta = 0.9.
    run(c, [1.0, 0.95, 0.92])
    assert c.plateau_epoch == 2 and c.state.best == 1.0
    # n=3, alpha=round(1.0)=1 -> switch at epoch 3.
    assert c.switch_epoch == 3


def test_wait_counter_resets_on_improvement():
    c = TwoPhaseController(20, plateau_patience=3)
    run(c, [1.0, 1.1, 1.2, 0.5, 0.6, 0.7])
    assert c.plateau_epoch is None and c.state.wait == 2 and c.state.best == 0.5
    run(c, [0.8], start=6)
    # n=7, alpha=round(7/3)=2 -> switch at epoch 8.
    assert (c.plateau_epoch, c.switch_epoch) == (6, 8)


def test_switch_beyond_budget_warns_once():
    c = TwoPhaseController(6, plateau_patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Plateau at epoch 4: n=5, alpha=2 -> switch at epoch 6 >= 6.
        factors, wanted = run(c, [1.0, 0.9, 0.8, 0.8, 0.8, 0.8])
        # Training past the budget: no second warning.
        run(c, [0.8], {6: 1.0}, start=6)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "beyond the budget of epochs=6" in messages[0]
    assert "switch falls at epoch 6" in messages[0]
    assert caught[0].filename == __file__  # stacklevel=2: the caller
    assert (c.plateau_epoch, c.switch_epoch) == (4, 6)
    assert factors == [1.0] * 6 and wanted == []


def test_decay_blocked_on_the_epoch_after_a_decay():
    c = TwoPhaseController(20, plateau_patience=1)
    # Plateau at epoch 1 (n=2, alpha=1) -> switch at epoch 2.
    run(c, [1.0, 1.0])
    assert c.switch_epoch == 2
    # Loss and eigenvalue rise every epoch from the switch on.
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    eigen = {2 + i: float(i + 1) for i in range(6)}
    factors, wanted = run(c, losses, eigen, start=2)
    assert wanted == [2, 3, 4, 5, 6, 7]
    assert factors == [1.0, 0.5, 1.0, 0.5, 1.0, 0.5]
    assert c.decay_epochs == [3, 5, 7]
    assert c.lr_factor == 0.125


def test_loss_rises_but_eigenvalue_falls_and_vice_versa():
    c = TwoPhaseController(20, plateau_patience=1)
    run(c, [1.0, 1.0])
    # Switch at 2: h0=2, f0=1. Epoch 3: loss up, eigenvalue down. Epoch 4:
    # eigenvalue up, loss down. Epoch 5: equal eigenvalue (not greater).
    # Epoch 6: both up -> decay.
    losses = [1.0, 1.5, 1.2, 1.3, 1.4]
    eigen = {2: 2.0, 3: 1.5, 4: 3.0, 5: 3.0, 6: 3.5}
    factors, _ = run(c, losses, eigen, start=2)
    assert factors == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert c.decay_epochs == [6]


def test_non_positive_reference_eigenvalue_never_decays():
    c = TwoPhaseController(20, plateau_patience=1)
    run(c, [1.0, 1.0])
    factors, _ = run(c, [1.0, 2.0, 3.0], {2: -1.0, 3: 0.5, 4: 0.7}, start=2)
    # Epoch 3 compares with h0=-1 (not > 0): no decay; epoch 4 with 0.5.
    assert factors == [1.0, 1.0, 0.5]


def test_non_finite_values_make_no_decision_and_warn_once():
    c = TwoPhaseController(20, plateau_patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The NaN epoch 1 neither improves nor counts as waiting: plateau
        # at epoch 3, not 2. n=4, alpha=1 -> switch at 4.
        run(c, [1.0, NAN, 1.0, 1.0])
        assert (c.plateau_epoch, c.switch_epoch) == (3, 4)
        assert c.state.best == 1.0
        # Switch epoch 4: h0=1, f0=1. Epoch 5: inf loss -> skipped, h0/f0
        # untouched. Epoch 6: NaN eigenvalue -> skipped. Epoch 7 compares
        # with h0=1, f0=1 -> decay.
        factors, _ = run(
            c, [1.0, math.inf, 5.0, 1.1], {4: 1.0, 5: 9.0, 6: NAN, 7: 1.5},
            start=4,
        )
    assert factors == [1.0, 1.0, 1.0, 0.5]
    assert c.decay_epochs == [7]
    assert len(caught) == 1
    assert "non-finite value at epoch 1" in str(caught[0].message)


def test_non_finite_at_switch_epoch_switches_without_reference():
    c = TwoPhaseController(20, plateau_patience=1)
    run(c, [1.0, 1.0])
    with pytest.warns(UserWarning, match="non-finite"):
        c.step(2, 1.0, NAN)
    assert c.phase == "convergence" and c.state.h0 is None
    # No reference yet: epoch 3 only sets it, even though both are "up".
    assert c.step(3, 2.0, 5.0) == 1.0
    assert (c.state.h0, c.state.f0) == (5.0, 2.0)
    assert c.step(4, 3.0, 6.0) == 0.5


def test_warmup_epochs_are_ignored():
    c = TwoPhaseController(20, warmup_epochs=3, plateau_patience=1)
    # Epochs 0-2 ignored (their rising losses would be a plateau); best=5.0
    # at 3, improved at 4, no improvement at 5 -> plateau at 5, n=6,
    # alpha=2 -> switch at 7.
    run(c, [1.0, 2.0, 3.0, 5.0, 4.0, 4.5])
    assert (c.plateau_epoch, c.switch_epoch) == (5, 7)


def test_warmup_longer_than_budget():
    with pytest.warns(UserWarning, match="warmup_epochs=6"):
        c = TwoPhaseController(5, warmup_epochs=6, plateau_patience=1)
    factors, wanted = run(c, [1.0] * 6)
    assert factors == [1.0] * 6 and wanted == []
    assert (c.plateau_epoch, c.state.best, c.state.wait) == (None, None, 0)


@pytest.mark.parametrize(
    "epochs, patience", [(10, 1), (20, 1), (30, 2), (100, 5), (300, 15), (1, 1)]
)
def test_default_patience_is_five_percent_of_budget(epochs, patience):
    assert TwoPhaseController(epochs).plateau_patience == patience


@pytest.mark.parametrize(
    "fraction, n, alpha",
    [(1 / 3, 2, 1), (1 / 3, 4, 1), (1 / 3, 5, 2), (1 / 3, 30, 10),
     (0.5, 3, 2), (0.5, 5, 2), (0.0, 9, 0)],
)
def test_alpha_is_rounded_half_to_even(fraction, n, alpha):
    c = TwoPhaseController(100, extra_epochs_fraction=fraction)
    assert c.alpha(n) == alpha


def test_zero_extension_switches_on_the_plateau_epoch():
    c = TwoPhaseController(10, plateau_patience=1, extra_epochs_fraction=0.0)
    assert not c.wants_eigenvalue(0)  # no best yet: epoch 0 cannot plateau
    c.step(0, 1.0)
    # Epoch 1 could detect the plateau and switch at once: wanted.
    assert c.wants_eigenvalue(1)
    with pytest.raises(ValueError, match="needs the largest Hessian eigenvalue"):
        c.step(1, 1.0)
    assert c.next_epoch == 1  # the failed step changed nothing
    c.step(1, 1.0, 2.0)
    assert (c.plateau_epoch, c.switch_epoch, c.phase) == (1, 1, "convergence")
    assert (c.state.h0, c.state.f0) == (2.0, 1.0)
    # Speculative eigenvalue ignored when the loss improves.
    d = TwoPhaseController(10, plateau_patience=1, extra_epochs_fraction=0.0)
    d.step(0, 1.0)
    d.step(1, 0.5, 7.0)
    assert (d.plateau_epoch, d.state.h0, d.state.best) == (None, None, 0.5)


def test_step_refuses_out_of_order_epochs():
    c = TwoPhaseController(10)
    with pytest.raises(ValueError, match="expected epoch 0 next.*epoch=1"):
        c.step(1, 1.0)
    c.step(0, 1.0)
    with pytest.raises(ValueError, match="expected epoch 1 next.*epoch=0"):
        c.step(0, 1.0)
    with pytest.raises(TypeError, match="epoch=1.0"):
        c.step(1.0, 1.0)


def test_missing_eigenvalue_after_switch_raises():
    c = TwoPhaseController(10, plateau_patience=1)
    run(c, [1.0, 1.0])
    with pytest.raises(ValueError, match="at epoch 2 \\(switch epoch 2\\)"):
        c.step(2, 1.0)


def test_state_round_trip_resumes_identically():
    reference = TwoPhaseController(12, plateau_patience=2)
    ref_factors, _ = run(reference, TRACE_A_LOSSES, trace_a_eigenvalues())
    for cut in (3, 5, 6, 8, 10):
        first = TwoPhaseController(12, plateau_patience=2)
        factors, _ = run(first, TRACE_A_LOSSES[:cut], trace_a_eigenvalues())
        saved = json.loads(json.dumps(first.get_state(), allow_nan=False))
        second = TwoPhaseController(12, plateau_patience=2)
        second.set_state(saved)
        assert second.state == first.state
        more, _ = run(
            second, TRACE_A_LOSSES[cut:], trace_a_eigenvalues(), start=cut
        )
        assert factors + more == ref_factors
        assert second.state == reference.state


def test_state_content_is_listed_explicitly():
    c = TwoPhaseController(12, plateau_patience=2)
    run(c, TRACE_A_LOSSES[:8], trace_a_eigenvalues())
    assert c.get_state() == {
        "version": 1,
        "controller": "TwoPhaseController",
        "config": {
            "epochs": 12, "warmup_epochs": 0, "plateau_patience": 2,
            "min_delta": 0.0, "extra_epochs_fraction": 1 / 3,
            "decay_factor": 0.5,
        },
        "state": {
            "next_epoch": 8, "phase": "convergence", "best": 0.8, "wait": 2,
            "plateau_epoch": 4, "switch_epoch": 6, "h0": 0.0, "f0": 0.72,
            "lr_factor": 0.5, "decay_epochs": [7],
        },
    }


def test_set_state_rejects_other_configuration_and_garbage():
    state = TwoPhaseController(12, plateau_patience=2).get_state()
    with pytest.raises(ValueError, match="another configuration"):
        TwoPhaseController(12, plateau_patience=3).set_state(state)
    with pytest.raises(ValueError, match="must be a dict"):
        TwoPhaseController(12).set_state({"phase": "exploration"})
    bad = json.loads(json.dumps(state))
    bad["state"]["phase"] = "cooldown"
    with pytest.raises(ValueError, match="phase='cooldown'"):
        TwoPhaseController(12, plateau_patience=2).set_state(bad)


def test_config_round_trip():
    c = TwoPhaseController(
        40, warmup_epochs=3, plateau_patience=4, min_delta=0.01,
        extra_epochs_fraction=0.25, decay_factor=0.2,
    )
    config = c.get_config()
    assert config == {
        "epochs": 40, "warmup_epochs": 3, "plateau_patience": 4,
        "min_delta": 0.01, "extra_epochs_fraction": 0.25, "decay_factor": 0.2,
    }
    assert TwoPhaseController.from_config(config).get_config() == config
    default = TwoPhaseController(40)
    assert default.get_config()["plateau_patience"] is None
    assert TwoPhaseController.from_config(default.get_config()).plateau_patience == 2


def test_state_dataclass_is_immutable_with_flags():
    s = TwoPhaseState()
    assert not s.plateau_detected and not s.in_convergence
    with pytest.raises(Exception):
        s.phase = "convergence"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "`epochs` must be an integer >= 1. Received: epochs=0"),
        (dict(epochs=10.0), "`epochs` must be an integer >= 1. Received: epochs=10.0"),
        (dict(epochs=True), "Received: epochs=True"),
        (dict(decay_factor=1.5), "`decay_factor` must be a finite number in \\(0, 1\\). Received: decay_factor=1.5"),
        (dict(decay_factor=0.0), "Received: decay_factor=0.0"),
        (dict(decay_factor=1), "Received: decay_factor=1$"),
        (dict(extra_epochs_fraction=-0.1), "`extra_epochs_fraction` must be a finite number >= 0. Received: extra_epochs_fraction=-0.1"),
        (dict(extra_epochs_fraction=math.inf), "`extra_epochs_fraction` must be a finite number >= 0. Received: extra_epochs_fraction=inf"),
        (dict(plateau_patience=0), "`plateau_patience` must be an integer >= 1. Received: plateau_patience=0"),
        (dict(plateau_patience=2.5), "Received: plateau_patience=2.5"),
        (dict(min_delta=-1e-3), "`min_delta` must be a finite number >= 0. Received: min_delta=-0.001"),
        (dict(min_delta="0"), "`min_delta` must be a finite number >= 0. Received: min_delta='0'"),
        (dict(warmup_epochs=-1), "`warmup_epochs` must be an integer >= 0. Received: warmup_epochs=-1"),
    ],
)
def test_argument_validation(kwargs, message):
    kwargs = dict(kwargs)
    epochs = kwargs.pop("epochs", 10)
    with pytest.raises(ValueError, match=message):
        TwoPhaseController(epochs, **kwargs)
