import json
import math
import warnings

import pytest

from keras_lrphase import AutoDecayController
from keras_lrphase.controllers import AutoDecayState

pytestmark = pytest.mark.backend_neutral

NAN = math.nan

# Trace B (beta 0.5, window 2, tolerance 0.1, drop threshold 0.8, warmup 1):
# epoch 0 warmup. Epoch 1: t=1, f=1, g=2 (g(1)). Epoch 2: t=2, f=1,
# g=1/0.75=4/3; spread (2-4/3)/(4/3)=0.5: not stable. Epoch 3: NaN, skipped.
# Epoch 4: t=3, g=1/0.875=8/7; spread (4/3-8/7)/(8/7)=1/6. Epoch 5: t=4,
# g=1/0.9375=16/15; spread (8/7-16/15)/(16/15)=1/14 < 0.1: stable, and
# g/g(1) = 8/15 <= 0.8: decay, new stage (t=0, f=0). Epoch 6: t=1, g=0.5.
# Epoch 7: t=2, f=0.35, g=0.35/0.75=7/15; spread (0.5-7/15)/(7/15)=1/14:
# stable, g/g(1) = 14/15 > 0.8: stop. Epoch 8: no decision after the stop.
# The paper's stability criterion (relative to the window's minimum).
TRACE_B = dict(beta=0.5, window=2, tolerance=0.1, drop_threshold=0.8,
               decay_factor=0.1, warmup_epochs=1, stability="paper")
TRACE_B_LOSSES = [9.0, 2.0, 1.0, NAN, 1.0, 1.0, 0.5, 0.45, 0.1]
TRACE_B_FACTORS = [1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 1.0, 1.0, 1.0]
TRACE_B_SMOOTHED = [None, 2.0, 4 / 3, 4 / 3, 8 / 7, 16 / 15, 0.5, 7 / 15, 7 / 15]


def warns_of_trace_b_nan():
    """Trace B's NaN loss (epoch 4, on purpose) is skipped with a warning:
    every run through it says so once."""
    return pytest.warns(UserWarning, match=(
        r"AutoDecayController: non-finite loss at epoch 4 \(loss=nan\); the "
        r"epoch is skipped \(no update, no decision\)"))


def run(controller, losses, start=0):
    factors, smoothed, decisions = [], [], []
    for epoch, loss in enumerate(losses, start):
        decision = controller.decide(epoch, {"loss": loss})
        factors.append(decision.factor)
        smoothed.append(controller.smoothed_loss)
        decisions.append(decision)
    return factors, smoothed, decisions


def test_trace_b_every_transition():
    c = AutoDecayController(**TRACE_B)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        factors, smoothed, decisions = run(c, TRACE_B_LOSSES)
    assert factors == TRACE_B_FACTORS
    assert smoothed[0] is None  # warmup: nothing observed yet
    assert smoothed[1:] == pytest.approx(TRACE_B_SMOOTHED[1:], rel=1e-12)
    assert [d.events for d in decisions] == (
        [()] * 5 + [("stable", "decay"), (), ("stable", "stop"), ()])
    assert [d.stop for d in decisions] == [False] * 7 + [True, False]
    assert c.decay_epochs == [5] and c.stop_epoch == 7 and c.should_stop
    assert c.stage == 1 and c.lr_factor == pytest.approx(0.1)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "non-finite loss at epoch 4" in messages[0]
    assert caught[0].filename == __file__


def test_a_decay_resets_t_and_f():
    c = AutoDecayController(**TRACE_B)
    with warns_of_trace_b_nan():
        run(c, TRACE_B_LOSSES[:6])
    s = c.state
    assert (s.stage, s.t, s.f, s.first, s.recent) == (1, 0, 0.0, None, ())
    assert s.smoothed == pytest.approx(16 / 15)  # the last g is kept
    c.step(6, 0.5)
    # Bias correction restarts: g(1) of the new stage is its first loss.
    assert (c.state.t, c.state.f, c.state.first) == (1, 0.25, 0.5)


def test_not_stable_before_window_epochs():
    c = AutoDecayController(beta=0.9, window=4, tolerance=1.0, drop_threshold=0.99)
    # Constant loss: g = loss from t=1 on, spread 0, but t < window.
    assert [c.step(e, 1.0) for e in range(3)] == [1.0] * 3
    assert not c.should_stop
    # t = window = 4: stable, no drop at all: stop.
    assert c.decide(3, {"loss": 1.0}).stop


def test_stable_window_uses_the_last_window_values_only():
    # beta 0.5, losses 4, 1, 1, ...: g = 4, 2, 10/7, 6/5, 34/31, 22/21,
    # 130/127, 86/85. The window of 3 ending at epoch 6 spreads
    # (34/31 - 130/127) / (130/127) = 7.2%; at epoch 7 it is
    # (22/21 - 86/85) / (86/85) = 3.5% < 5%: stable, although g(1) = 4 is
    # far from the rest; g / g(1) = 0.253 <= 0.5: decay at epoch 7.
    c = AutoDecayController(beta=0.5, window=3, tolerance=0.05,
                            drop_threshold=0.5, stability="paper")
    factors, smoothed, _ = run(c, [4.0] + [1.0] * 8)
    assert smoothed[:8] == pytest.approx(
        [4, 2, 10 / 7, 6 / 5, 34 / 31, 22 / 21, 130 / 127, 86 / 85], rel=1e-12)
    assert factors == [1.0] * 7 + [0.1, 1.0]
    assert c.decay_epochs == [7]


def test_warmup_epochs_make_no_update():
    c = AutoDecayController(window=2, warmup_epochs=3)
    for epoch in range(3):
        c.step(epoch, 100.0)
    assert (c.state.t, c.state.f, c.smoothed_loss) == (0, 0.0, None)
    c.step(3, 1.0)
    assert c.smoothed_loss == pytest.approx(1.0)  # g(1) = first loss


def test_no_decision_after_stop():
    c = AutoDecayController(**TRACE_B)
    with warns_of_trace_b_nan():
        run(c, TRACE_B_LOSSES[:8])
    before = c.state
    assert c.step(8, 0.001) == 1.0
    assert c.state.next_epoch == 9
    assert (c.state.t, c.state.smoothed) == (before.t, before.smoothed)


def test_state_round_trip_at_several_cut_points():
    reference = AutoDecayController(**TRACE_B)
    with warns_of_trace_b_nan():
        ref_factors, _, _ = run(reference, TRACE_B_LOSSES)
    for cut in (1, 3, 5, 6, 7, 8):
        first = AutoDecayController(**TRACE_B)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            factors, _, _ = run(first, TRACE_B_LOSSES[:cut])
            saved = json.loads(json.dumps(first.get_state(), allow_nan=False))
            second = AutoDecayController(**TRACE_B)
            second.set_state(saved)
            assert second.state == first.state
            more, _, _ = run(second, TRACE_B_LOSSES[cut:], start=cut)
        # The NaN warning once, from whichever controller ran epoch 4.
        assert [str(w.message)[:47] for w in caught] == [
            "AutoDecayController: non-finite loss at epoch 4"]
        assert factors + more == ref_factors
        assert second.state == reference.state


def test_state_content_is_listed_explicitly():
    c = AutoDecayController(**TRACE_B)
    run(c, TRACE_B_LOSSES[:3])
    state = c.get_state()
    assert state["controller"] == "AutoDecayController"
    assert state["config"] == dict(TRACE_B, epsilon=1e-8)
    assert state["state"] == {
        "next_epoch": 3, "stage": 0, "t": 2, "f": 1.0, "first": 2.0,
        "recent": [2.0, 4 / 3], "smoothed": 4 / 3, "lr_factor": 1.0,
        "decay_epochs": [], "stop_epoch": None,
    }


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr_factor", -1, "`lr_factor` must be a positive finite number"),
        ("next_epoch", "5", "Received: next_epoch='5'"),
        ("stop_epoch", 1.5, "`stop_epoch` must be an integer >= 0"),
        ("recent", [1, "x"], "`recent` must be a list of numbers"),
    ],
)
def test_set_state_refuses_fields_of_the_wrong_kind(field, value, message):
    state = AutoDecayController(**TRACE_B).get_state()
    state["state"][field] = value
    with pytest.raises(ValueError, match=message):
        AutoDecayController(**TRACE_B).set_state(state)


def test_set_state_refuses_another_controller_or_configuration():
    state = AutoDecayController(**TRACE_B).get_state()
    with pytest.raises(ValueError, match="another configuration"):
        AutoDecayController(window=3).set_state(state)
    from keras_lrphase import TwoPhaseController

    with pytest.raises(ValueError, match="made by a AutoDecayController, not a TwoPhaseController"):
        TwoPhaseController(10).set_state(state)


def test_config_round_trip_and_defaults():
    c = AutoDecayController()
    assert c.get_config() == {
        "beta": 0.9, "window": 5, "tolerance": 0.05, "drop_threshold": 0.85,
        "epsilon": 1e-8, "decay_factor": 0.1, "warmup_epochs": 0,
        "stability": "stage",
    }
    assert AutoDecayController.from_config(c.get_config()).get_config() == c.get_config()
    assert AutoDecayState() == c.state


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=1.0), "`beta` must be a finite number in \\(0, 1\\). Received: beta=1.0"),
        (dict(beta=True), "Received: beta=True"),
        (dict(window=1), "`window` must be an integer >= 2. Received: window=1"),
        (dict(window=2.0), "Received: window=2.0"),
        (dict(tolerance=0), "`tolerance` must be a finite number > 0. Received: tolerance=0"),
        (dict(tolerance=math.inf), "Received: tolerance=inf"),
        (dict(drop_threshold=1.2), "`drop_threshold` must be a finite number in \\(0, 1\\)"),
        (dict(epsilon=-1e-8), "Received: epsilon=-1e-08"),
        (dict(decay_factor=1e-320), "`decay_factor` must be at least 1.18e-38 \\(a float32\\)"),
        (dict(warmup_epochs=-1), "`warmup_epochs` must be an integer >= 0"),
    ],
)
def test_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoDecayController(**kwargs)


def test_stage_stability_ends_a_stage_whose_loss_falls_towards_zero():
    # beta 0.5, window 3, tolerance 0.05, the loss halving every epoch:
    # g(t) = t / (2**t - 1) = 1, 2/3, 3/7, ... Relative to the window's
    # minimum the spread stays above 130% (the paper's criterion never
    # holds); relative to g(1) = 1 it is first below 5% at index 8: the
    # window 7/127, 8/255, 9/511 spreads 0.0375.
    losses = [1.0 * 0.5 ** e for e in range(12)]
    paper = AutoDecayController(beta=0.5, window=3, tolerance=0.05,
                                drop_threshold=0.5, stability="paper")
    stage = AutoDecayController(beta=0.5, window=3, tolerance=0.05,
                                drop_threshold=0.5)
    _, paper_g, _ = run(paper, losses)
    factors, g, _ = run(stage, losses)
    assert paper.decay_epochs == [] and not paper.should_stop
    # The exact first stable window of the stage rule, from the g values.
    first = next(e for e in range(2, 12)
                 if max(g[e - 2:e + 1]) - min(g[e - 2:e + 1]) < 0.05 * g[0])
    assert stage.decay_epochs == [first] and factors[first] == 0.1
    assert all((max(paper_g[e - 2:e + 1]) - min(paper_g[e - 2:e + 1]))
               / min(paper_g[e - 2:e + 1]) >= 0.05 for e in range(2, 12))
    assert first == 8 and g[first] == pytest.approx(9 / 511, rel=1e-12)


def test_version_1_state_loads_with_the_papers_stability():
    v1 = AutoDecayController(**TRACE_B).get_state()
    v1["version"] = 1
    del v1["config"]["stability"]
    c = AutoDecayController(**TRACE_B)
    with pytest.warns(UserWarning, match="read as stability='paper'"):
        c.set_state(v1)
    stage = dict(TRACE_B, stability="stage")
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="another configuration"):
            AutoDecayController(**stage).set_state(v1)


def test_stability_argument_is_checked():
    with pytest.raises(ValueError, match="`stability` must be one of "
                       "\\['stage', 'paper'\\]. Received: stability='window'"):
        AutoDecayController(stability="window")
