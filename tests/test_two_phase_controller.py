import json
import math
import warnings

import pytest

from keras_lrphase.controllers import TwoPhaseController
from keras_lrphase.controllers import TwoPhaseState
from scripted_training import TRACE_A
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_LOSSES

# These traces are scripted losses, flat from the first epochs on purpose
# (the paper's examples): their plateaus warn that nothing was learned,
# which test_plateau_at_the_level_of_the_first_epochs_warns_that_nothing_
# was_learned asserts; in the other tests the warning is beside the point.
pytestmark = [
    pytest.mark.backend_neutral,
    pytest.mark.filterwarnings(
        "ignore:TwoPhaseController. loss plateau detected at epoch .*"
        "nothing seems to have been learned:UserWarning"),
]

NAN = float("nan")
PAPER_RULES = dict(plateau_rule="paper", decay_rule="paper", min_factor=0.0)


def paper_controller(*args, **kwargs):
    """Algorithm 1 exactly as printed: the paper's plateau and decay rules."""
    return TwoPhaseController(*args, **PAPER_RULES, **kwargs)


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
    c = paper_controller(12, plateau_patience=2)
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
    c = paper_controller(10, plateau_patience=2)
    losses = [1.0 - 0.1 * i for i in range(10)]
    factors, wanted = run(c, losses)
    assert factors == [1.0] * 10
    assert wanted == []
    assert (c.plateau_epoch, c.switch_epoch, c.decay_epochs) == (None, None, [])
    assert c.phase == "exploration"
    assert c.state.best == pytest.approx(0.1) and c.state.wait == 0


def test_min_delta_small_improvements_do_not_count():
    c = paper_controller(10, plateau_patience=2, min_delta=0.1)
    # 0.95 and 0.92 are not below best - min_delta = 0.9.
    run(c, [1.0, 0.95, 0.92])
    assert c.plateau_epoch == 2 and c.state.best == 1.0
    # n=3, alpha=round(1.0)=1 -> switch at epoch 3.
    assert c.switch_epoch == 3


def test_wait_counter_resets_on_improvement():
    c = paper_controller(20, plateau_patience=3)
    run(c, [1.0, 1.1, 1.2, 0.5, 0.6, 0.7])
    assert c.plateau_epoch is None and c.state.wait == 2 and c.state.best == 0.5
    run(c, [0.8], start=6)
    # n=7, alpha=round(7/3)=2 -> switch at epoch 8.
    assert (c.plateau_epoch, c.switch_epoch) == (6, 8)


def test_switch_beyond_budget_warns_once():
    c = paper_controller(6, plateau_patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Plateau at epoch 4: n=5, alpha=2 -> switch at epoch 6 >= 6.
        factors, wanted = run(c, [1.0, 0.9, 0.8, 0.8, 0.8, 0.8])
        # Training past the budget: no second warning.
        run(c, [0.8], {6: 1.0}, start=6)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "beyond the budget of epochs=6" in messages[0]
    assert "plateau detected at epoch 5;" in messages[0]
    assert "switch falls at epoch 7" in messages[0]
    assert caught[0].filename == __file__  # stacklevel=2: the caller
    assert (c.plateau_epoch, c.switch_epoch) == (4, 6)
    assert factors == [1.0] * 6 and wanted == []


def test_decay_blocked_on_the_epoch_after_a_decay():
    c = paper_controller(20, plateau_patience=1)
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
    c = paper_controller(20, plateau_patience=1)
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
    c = paper_controller(20, plateau_patience=1)
    run(c, [1.0, 1.0])
    factors, _ = run(c, [1.0, 2.0, 3.0], {2: -1.0, 3: 0.5, 4: 0.7}, start=2)
    # Epoch 3 compares with h0=-1 (not > 0): no decay; epoch 4 with 0.5.
    assert factors == [1.0, 1.0, 0.5]


def test_non_finite_values_make_no_decision_and_warn_once():
    c = paper_controller(20, plateau_patience=2)
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
    nonfinite = [w for w in caught if "non-finite" in str(w.message)]
    assert len(nonfinite) == 1
    assert "non-finite value at epoch 2" in str(nonfinite[0].message)


def test_non_finite_at_switch_epoch_switches_without_reference():
    c = paper_controller(20, plateau_patience=1)
    run(c, [1.0, 1.0])
    with pytest.warns(UserWarning, match="non-finite"):
        c.step(2, 1.0, NAN)
    assert c.phase == "convergence" and c.state.h0 is None
    # No reference yet: epoch 3 only sets it, even though both are "up".
    assert c.step(3, 2.0, 5.0) == 1.0
    assert (c.state.h0, c.state.f0) == (5.0, 2.0)
    assert c.step(4, 3.0, 6.0) == 0.5


def test_warmup_epochs_are_ignored():
    c = paper_controller(20, warmup_epochs=3, plateau_patience=1)
    # Epochs 0-2 ignored (their rising losses would be a plateau); best=5.0
    # at 3, improved at 4, no improvement at 5 -> plateau at 5, n=6,
    # alpha=2 -> switch at 7.
    run(c, [1.0, 2.0, 3.0, 5.0, 4.0, 4.5])
    assert (c.plateau_epoch, c.switch_epoch) == (5, 7)


def test_warmup_longer_than_budget():
    with pytest.warns(UserWarning, match="warmup_epochs=6"):
        c = paper_controller(5, warmup_epochs=6, plateau_patience=1)
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
    c = paper_controller(10, plateau_patience=1, extra_epochs_fraction=0.0)
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
    d = paper_controller(10, plateau_patience=1, extra_epochs_fraction=0.0)
    d.step(0, 1.0)
    d.step(1, 0.5, 7.0)
    assert (d.plateau_epoch, d.state.h0, d.state.best) == (None, None, 0.5)


def test_step_refuses_out_of_order_epochs():
    c = paper_controller(10)
    with pytest.raises(ValueError, match="expected epoch 0 next.*epoch=1"):
        c.step(1, 1.0)
    c.step(0, 1.0)
    with pytest.raises(ValueError, match="expected epoch 1 next.*epoch=0"):
        c.step(0, 1.0)
    with pytest.raises(TypeError, match="epoch=1.0"):
        c.step(1.0, 1.0)


def test_missing_eigenvalue_after_switch_raises():
    c = paper_controller(10, plateau_patience=1)
    run(c, [1.0, 1.0])
    with pytest.raises(ValueError, match="at epoch=2 \\(switch at index 2\\)"):
        c.step(2, 1.0)


def test_state_round_trip_resumes_identically():
    reference = paper_controller(12, plateau_patience=2)
    ref_factors, _ = run(reference, TRACE_A_LOSSES, trace_a_eigenvalues())
    for cut in (3, 5, 6, 8, 10):
        first = paper_controller(12, plateau_patience=2)
        factors, _ = run(first, TRACE_A_LOSSES[:cut], trace_a_eigenvalues())
        saved = json.loads(json.dumps(first.get_state(), allow_nan=False))
        second = paper_controller(12, plateau_patience=2)
        second.set_state(saved)
        assert second.state == first.state
        more, _ = run(
            second, TRACE_A_LOSSES[cut:], trace_a_eigenvalues(), start=cut
        )
        assert factors + more == ref_factors
        assert second.state == reference.state


def test_state_content_is_listed_explicitly():
    c = paper_controller(12, plateau_patience=2)
    run(c, TRACE_A_LOSSES[:8], trace_a_eigenvalues())
    assert c.get_state() == {
        "version": 3,
        "controller": "TwoPhaseController",
        "config": {
            "epochs": 12, "warmup_epochs": 0, "plateau_patience": 2,
            "min_delta": 0.0, "extra_epochs_fraction": 1 / 3,
            "decay_factor": 0.5, "plateau_rule": "paper",
            "excursion_threshold": 0.1, "decay_rule": "paper",
            "decay_threshold": 1.0, "noise_window": 5, "min_factor": 0.0,
        },
        "state": {
            "next_epoch": 8, "phase": "convergence", "best": 0.8, "wait": 2,
            "plateau_epoch": 4, "switch_epoch": 6, "h0": 0.0, "f0": 0.72,
            "lr_factor": 0.5, "decay_epochs": [7], "excursion": 0,
            "excursion_low": None, "recent_losses": [],
            "recent_eigenvalues": [], "early_loss": 1.0,
        },
    }


def test_set_state_rejects_other_configuration_and_garbage():
    state = paper_controller(12, plateau_patience=2).get_state()
    with pytest.raises(ValueError, match="another configuration"):
        paper_controller(12, plateau_patience=3).set_state(state)
    with pytest.raises(ValueError, match="must be a dict"):
        paper_controller(12).set_state({"phase": "exploration"})
    bad = json.loads(json.dumps(state))
    bad["state"]["phase"] = "cooldown"
    with pytest.raises(ValueError, match="phase='cooldown'"):
        paper_controller(12, plateau_patience=2).set_state(bad)


def test_config_round_trip():
    c = TwoPhaseController(
        40, warmup_epochs=3, plateau_patience=4, min_delta=0.01,
        extra_epochs_fraction=0.25, decay_factor=0.2,
    )
    config = c.get_config()
    assert config == {
        "epochs": 40, "warmup_epochs": 3, "plateau_patience": 4,
        "min_delta": 0.01, "extra_epochs_fraction": 0.25, "decay_factor": 0.2,
        "plateau_rule": "flat", "excursion_threshold": 0.1,
        "decay_rule": "paper", "decay_threshold": 1.0,
        "noise_window": 5, "min_factor": 0.01,
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


# -- the robust rules (plateau_rule="flat", decay_rule="significant") ----------

NEAR_ZERO_TRACE = [
    0.7866, 0.6678, 0.5638, 0.4289, 0.2929, 0.1916, 0.1281, 0.0956, 0.0711,
    0.0592, 0.0496, 0.0406, 0.0331, 0.0288, 0.0260, 0.0230, 0.0203, 0.0191,
    0.0184, 0.0168, 0.0144, 0.0163, 0.0145, 0.0114, 0.0105, 0.0110, 0.0084,
    0.0103, 0.0097, 0.0068, 0.0076, 0.0079, 0.0055, 0.0099, 0.0080, 0.0099,
    0.0046, 0.0054, 0.0041, 0.0068]

MONOTONE_AND_FLAT_TRACES = [
    # (losses, epochs, plateau_patience, min_delta, warmup_epochs)
    (TRACE_A_LOSSES[:6], 12, 2, 0.0, 0),
    ([1.0 - 0.1 * i for i in range(10)], 10, 2, 0.0, 0),
    ([1.0, 0.95, 0.92], 10, 2, 0.1, 0),
    ([2.0] * 8, 20, 3, 0.0, 0),
    ([2.0, 1.5, 1.2, 1.1, 1.05, 1.03, 1.02, 1.015, 1.012], 20, 3, 0.02, 0),
    ([3.0, 2.0, 1.0, 0.9, 0.91, 0.89, 0.9, 0.905, 0.895, 0.9], 20, 3, 0.0, 1),
    ([0.5 + 0.01 * ((-1) ** i) for i in range(12)], 40, 4, 0.0, 2),
    # A loss falling towards 0 (Getting started's first run, TensorFlow):
    # near 0 its epoch-to-epoch noise is tens of percent of the best loss,
    # yet small against the 0.66 the loss has already shed, so it is no
    # excursion.
    (NEAR_ZERO_TRACE, 40, 2, 0.0, 2),
]


@pytest.mark.parametrize("losses, epochs, patience, min_delta, warmup",
                         MONOTONE_AND_FLAT_TRACES)
def test_flat_rule_finds_the_papers_plateau_on_monotone_and_flat_traces(
        losses, epochs, patience, min_delta, warmup):
    found = []
    for rule in ("paper", "flat"):
        c = TwoPhaseController(epochs, plateau_patience=patience,
                               min_delta=min_delta, warmup_epochs=warmup,
                               plateau_rule=rule)
        for epoch, loss in enumerate(losses):
            c.step(epoch, loss, 1.0)
        found.append((c.plateau_epoch, c.switch_epoch))
    assert found[0] == found[1]


def full_scale_shaped_trace():
    """The full-scale Table 2 two-phase run's shape, 300 epochs.

    Warmup (epochs 0-9) descends to 2.31, the post-warmup best (epoch 10);
    the loss then rises to 3.37 (epochs 11-13) and falls back linearly,
    staying above 2.31 until epoch 34 (an excursion of 24 epochs); a long
    descent to 0.62 (epochs 35-149); then a flat tail 0.6 +- 0.01 whose
    fluctuations are a fixed pseudo-random pattern.
    """
    warmup = [2.9 - 0.059 * i for i in range(10)]
    excursion = [2.31, 2.66, 3.01, 3.37] + [
        3.37 - (3.37 - 2.35) * (i + 1) / 21 for i in range(21)]
    descent = [2.30 * (0.62 / 2.30) ** (i / 114) for i in range(115)]
    noise = [((i * 7919) % 13 - 6) / 600 for i in range(150)]
    tail = [0.6 + e for e in noise]
    return warmup + excursion + descent + tail


def test_full_scale_shape_paper_switches_inside_the_excursion_flat_after():
    losses = full_scale_shaped_trace()
    assert len(losses) == 300
    assert losses[10] == 2.31 and max(losses[11:35]) == 3.37
    assert all(loss > 2.31 for loss in losses[11:35]) and losses[35] < 2.31
    switches = {}
    for rule in ("paper", "flat"):
        c = TwoPhaseController(300, warmup_epochs=10, plateau_rule=rule)
        assert c.plateau_patience == 15
        for epoch, loss in enumerate(losses):
            c.step(epoch, loss, 1.0)
        switches[rule] = (c.plateau_epoch, c.switch_epoch)
    # The paper's rule: best 2.31 at epoch 10, 15 epochs without a new best
    # (11-25) -> plateau at 25, n=26, alpha=9 -> switch at 34, while the
    # loss (2.40) is still above its pre-excursion best.
    assert switches["paper"] == (25, 34)
    assert losses[34] > losses[10]
    # Rule "flat": epochs above 2.31 * 1.1 = 2.541 are an excursion; the
    # loss then descends with a new best every epoch until the tail, where
    # the plateau is the 15th epoch without a new best.
    plateau, switch = switches["flat"]
    assert plateau >= 150 and switch < 300
    tail_best = min(losses[150:plateau + 1])
    assert all(loss >= tail_best for loss in losses[plateau - 14:plateau + 1])
    assert max(losses[plateau - 14:plateau + 1]) <= 0.61


def test_flat_rule_excursion_and_its_recovery_reset_the_wait_counter():
    c = TwoPhaseController(40, plateau_patience=3)
    # best 1.0; 1.05 waits (5% above); 1.2 is an excursion (20% above): the
    # counter restarts; 1.08 and 1.02 are new lows of the recovery (progress,
    # as a new best would be); 1.09, 1.05 and 1.04 wait -> plateau at 7.
    losses = [1.0, 1.05, 1.2, 1.08, 1.02, 1.09, 1.05, 1.04]
    expected = [(0, 0, None), (1, 0, None), (0, 1, 1.2), (0, 0, 1.08),
                (0, 0, 1.02), (1, 0, 1.02), (2, 0, 1.02), (3, 0, 1.02)]
    for epoch, loss in enumerate(losses):
        c.step(epoch, loss)
        assert (c.state.wait, c.state.excursion,
                c.state.excursion_low) == expected[epoch]
    assert (c.plateau_epoch, c.state.best) == (7, 1.0)
    paper = paper_controller(40, plateau_patience=3)
    for epoch, loss in enumerate(losses[:4]):
        paper.step(epoch, loss)
    assert paper.plateau_epoch == 3


def test_flat_rule_a_new_best_ends_the_recovery():
    c = TwoPhaseController(40, plateau_patience=2, min_delta=0.05)
    # Excursion (1.5); recovery lows 1.08 and 1.02 (each lower by more than
    # min_delta); 1.0 is no new low (not below 0.97) and waits; 0.9 is a new
    # best, which ends the recovery; 0.92 and 0.93 wait -> plateau at 7.
    lows = []
    for epoch, loss in enumerate([1.0, 1.5, 1.08, 1.02, 1.0, 0.9, 0.92, 0.93]):
        c.step(epoch, loss)
        lows.append((c.state.excursion_low, c.state.wait))
    assert lows == [(None, 0), (1.5, 0), (1.08, 0), (1.02, 0), (1.02, 1),
                    (None, 0), (None, 1), (None, 2)]
    assert (c.plateau_epoch, c.state.best) == (7, 0.9)


def test_flat_rule_long_excursion_becomes_the_new_level():
    # Patience 2: an excursion of 3 * 2 = 6 epochs is the loss's new level.
    c = TwoPhaseController(100, plateau_patience=2)
    assert c.excursion_patience == 6
    losses = [1.0, 1.5, 1.45, 1.42, 1.44, 1.43]
    for epoch, loss in enumerate(losses):
        c.step(epoch, loss)
    assert (c.state.excursion, c.state.excursion_low, c.state.best) == (
        5, 1.42, 1.0)
    c.step(6, 1.46)  # the 6th excursion epoch: best becomes 1.42
    assert (c.state.excursion, c.state.excursion_low, c.state.best) == (
        0, None, 1.42)
    c.step(7, 1.43)
    c.step(8, 1.44)
    assert (c.plateau_epoch, c.switch_epoch) == (8, 11)


def significant_run(controller):
    """The hand-computed decay trace of decay rule "significant".

    Plateau at epoch 1 (patience 1), switch at epoch 2. Recent losses and
    eigenvalues at one learning rate: epoch 5 compares a loss rise of 0.02
    with the median change 0.025 (not above it: no decay, where the paper
    decays); epoch 6 rises 0.04 > 0.02 and 0.18 > 0.07: decay. Epoch 7
    re-arms; epoch 8 rises again but has a single change at this rate.
    """
    losses = [1.0, 1.0, 1.00, 1.02, 0.99, 1.01, 1.05, 0.9, 0.95]
    eigenvalues = {2: 2.0, 3: 2.1, 4: 2.05, 5: 2.12, 6: 2.30, 7: 2.0, 8: 2.5}
    return run(controller, losses, eigenvalues)


def test_significant_decay_rule_trace():
    c = TwoPhaseController(20, plateau_patience=1, decay_rule="significant")
    factors, wanted = significant_run(c)
    assert wanted == [2, 3, 4, 5, 6, 7, 8]
    assert factors == [1.0] * 6 + [0.5, 1.0, 1.0]
    assert c.decay_epochs == [6]
    assert c.state.recent_losses == (0.9, 0.95)
    assert c.state.recent_eigenvalues == (2.0, 2.5)
    paper = paper_controller(20, plateau_patience=1)
    factors, _ = significant_run(paper)
    assert paper.decay_epochs == [3, 5, 8]


def test_significant_decay_rule_threshold_zero_needs_only_the_noise_window():
    c = TwoPhaseController(20, plateau_patience=1, decay_rule="significant",
                           decay_threshold=0.0)
    significant_run(c)
    # Any rise decays once two changes at the rate are known: epoch 5.
    assert c.decay_epochs == [5]


def test_significant_rule_keeps_a_window_of_recent_values():
    c = TwoPhaseController(40, plateau_patience=1, noise_window=2,
                           decay_rule="significant")
    run(c, [1.0, 1.0])
    losses = [1.0, 0.9, 0.8, 0.7, 0.6]
    run(c, losses, {2 + i: 3.0 - 0.1 * i for i in range(5)}, start=2)
    assert c.state.recent_losses == pytest.approx((0.8, 0.7, 0.6))
    assert c.state.recent_eigenvalues == pytest.approx((2.8, 2.7, 2.6))


def test_new_state_fields_resume_identically():
    # An excursion (epochs 3-4) and its recovery (5-7), a plateau at 9, the
    # switch at 12 and two decays of rule "significant" (15 and 20).
    losses = [3.0, 2.5, 2.0, 2.6, 2.7, 2.3, 2.2, 2.1, 2.15, 2.12, 2.11, 2.1,
              2.09, 2.1, 2.08, 2.3, 2.0, 2.02, 2.01, 2.03, 2.2, 1.9]
    eigen = dict(enumerate([0.0] * 12 + [3.0, 3.1, 3.05, 3.5, 2.0, 2.1, 2.05,
                                         2.07, 2.6, 1.0]))

    def make():
        return TwoPhaseController(100, warmup_epochs=2, plateau_patience=2,
                                  decay_rule="significant")

    reference = make()
    ref_factors, _ = run(reference, losses, eigen)
    assert (reference.plateau_epoch, reference.switch_epoch) == (9, 12)
    assert reference.decay_epochs == [15, 20]
    for cut in (3, 4, 5, 6, 9, 12, 14, 15, 17, 21):
        first = make()
        factors, _ = run(first, losses[:cut], eigen)
        saved = json.loads(json.dumps(first.get_state(), allow_nan=False))
        second = make()
        second.set_state(saved)
        more, _ = run(second, losses[cut:], eigen, start=cut)
        assert factors + more == ref_factors
        assert second.state == reference.state


def test_version_1_state_loads_as_the_papers_rules():
    v1 = {
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
    c = paper_controller(12, plateau_patience=2)
    with pytest.warns(UserWarning, match="version 1 of keras_lrphase.*"
                      "plateau_rule='paper', decay_rule='paper'"):
        c.set_state(v1)
    assert (c.state.excursion, c.state.recent_losses, c.state.early_loss) == (
        0, (), None)
    # It continues as the uninterrupted paper controller of trace A.
    more, _ = run(c, TRACE_A_LOSSES[8:], trace_a_eigenvalues(), start=8)
    assert more == [1.0, 0.5, 1.0, 1.0] and c.decay_epochs == [7, 9]
    # The default (robust) rules are another configuration: refused.
    with pytest.warns(UserWarning, match="version 1 of keras_lrphase"):
        with pytest.raises(ValueError, match="another configuration"):
            TwoPhaseController(12, plateau_patience=2).set_state(v1)
    with pytest.raises(ValueError, match="state version 4"):
        paper_controller(12).set_state(dict(v1, version=4))


def test_the_floor_clamps_the_last_decay_and_stops_the_decays():
    # Trace A's convergence phase with every later epoch a rise of both:
    # the paper's rule halves the rate at every other epoch without end.
    losses = TRACE_A_LOSSES[:7] + [0.72 + 0.01 * i for i in range(1, 11)]
    eigen = dict(trace_a_eigenvalues())
    eigen.update({7 + i: 2.0 + 0.1 * i for i in range(10)})
    paper = paper_controller(40, plateau_patience=2)
    run(paper, losses, eigen)
    floored = TwoPhaseController(40, plateau_patience=2, plateau_rule="paper",
                                 decay_rule="paper", min_factor=0.1)
    factors, _ = run(floored, losses, eigen)
    assert paper.decay_epochs == [7, 9, 11, 13, 15]
    assert paper.state.lr_factor == 0.5 ** 5
    # 0.5, 0.25, 0.125, then 0.0625 is clamped to 0.1 (a factor of 0.8);
    # at the floor, the rise at epoch 15 decays no more.
    assert floored.decay_epochs == [7, 9, 11, 13]
    assert [f for f in factors if f != 1.0] == [0.5, 0.5, 0.5, 0.8]
    assert floored.state.lr_factor == 0.1


def test_version_2_state_loads_without_a_floor():
    c = paper_controller(12, plateau_patience=2)
    run(c, TRACE_A_LOSSES[:8], trace_a_eigenvalues())
    v2 = json.loads(json.dumps(c.get_state()))
    v2["version"] = 2
    del v2["config"]["min_factor"]
    resumed = paper_controller(12, plateau_patience=2)
    with pytest.warns(UserWarning, match="version 2 of keras_lrphase.*"
                      "min_factor=0"):
        resumed.set_state(v2)
    assert resumed.state == c.state
    with pytest.warns(UserWarning, match="version 2"):
        with pytest.raises(ValueError, match="another configuration"):
            TwoPhaseController(12, plateau_patience=2, plateau_rule="paper",
                               decay_rule="paper").set_state(v2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(plateau_rule="robust"), "`plateau_rule` must be one of \\['flat', 'paper'\\]. Received: plateau_rule='robust'"),
        (dict(decay_rule=None), "`decay_rule` must be one of \\['significant', 'paper'\\]. Received: decay_rule=None"),
        (dict(excursion_threshold=0.0), "`excursion_threshold` must be .*Received: excursion_threshold=0.0"),
        (dict(decay_threshold=-1.0), "`decay_threshold` must be a finite number >= 0. Received: decay_threshold=-1.0"),
        (dict(noise_window=1), "`noise_window` must be an integer >= 2. Received: noise_window=1"),
        (dict(min_factor=1.5), "`min_factor` must be .*Received: min_factor=1.5"),
        (dict(min_factor=-0.1), "`min_factor` must be .*Received: min_factor=-0.1"),
    ],
)
def test_robust_rule_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoPhaseController(10, **kwargs)


def test_plateau_at_the_level_of_the_first_epochs_warns_that_nothing_was_learned():
    # Warmup 2: the lowest loss of epochs 0-1 is 2.30; the plateau at index
    # 5 (epoch 6 as Keras prints it) has best 2.25, within 10% of it.
    c = TwoPhaseController(40, warmup_epochs=2, plateau_patience=3)
    with pytest.warns(UserWarning, match="plateau detected at epoch 6 while "
                      "the loss \\(best 2.25\\) is still within 10% of its "
                      "level in the first epochs \\(2.3\\)"):
        for epoch, loss in enumerate([2.4, 2.3, 2.25, 2.28, 2.3, 2.26, 2.27]):
            c.step(epoch, loss)
    assert (c.state.early_loss, c.plateau_epoch) == (2.3, 5)
    # A plateau after learning does not warn.
    learned = TwoPhaseController(40, warmup_epochs=2, plateau_patience=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for epoch, loss in enumerate([2.4, 2.3, 1.5, 1.0, 1.02, 1.01, 1.03]):
            learned.step(epoch, loss)
    assert learned.plateau_epoch == 6
