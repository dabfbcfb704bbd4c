import math

import pytest

from keras_lrphase.training.plots import phase_spans
from keras_lrphase.training.plots import plot_compare
from keras_lrphase.training.plots import plot_curves

pytestmark = pytest.mark.backend_neutral


def test_phase_spans_and_plots(tmp_path):
    phases = ["warmup", "warmup", "exploration", "convergence", "convergence",
              "exploration", "convergence"]
    rows = [dict(epoch=i + 1, phase=p, loss=1.0 / (i + 1), val_accuracy=0.1 * i,
                 learning_rate=0.1, hessian_max_eigenvalue=math.nan if i < 3 else 1.0 + i)
            for i, p in enumerate(phases)]
    assert phase_spans(rows, "convergence") == [(4, 5), (7, 7)]
    assert phase_spans(rows, "warmup") == [(1, 2)]
    assert phase_spans(rows, "n/a") == []
    plot_curves(rows, str(tmp_path / "c.png"), title="t")
    plot_compare({"a": rows, "b": rows[:4]}, str(tmp_path / "d.png"))
    for name in ("c.png", "d.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_first_decay_epoch_skips_warmup_ramps():
    from keras_lrphase.training.plots import first_decay_epoch

    lrs = [0.03, 0.06, 0.1, 0.1, 0.05, 0.05, 0.01]
    phases = ["warmup", "warmup", "stage 1", "stage 1", "stage 2", "stage 2",
              "stage 3"]
    rows = [dict(epoch=i + 1, phase=p, learning_rate=lr)
            for i, (p, lr) in enumerate(zip(phases, lrs))]
    assert first_decay_epoch(rows) == 5
    # A ramp down inside warmup is not a decay; a constant LR has none.
    ramp = [dict(epoch=1, phase="warmup", learning_rate=0.2),
            dict(epoch=2, phase="exploration", learning_rate=0.1),
            dict(epoch=3, phase="exploration", learning_rate=0.1)]
    assert first_decay_epoch(ramp) is None


def _png_width(path):
    with open(path, "rb") as f:
        return int.from_bytes(f.read(24)[16:20], "big")


def test_compare_draws_the_eigenvalue_panel_when_recorded(tmp_path):
    rows = [dict(epoch=i + 1, phase="exploration", loss=1.0 / (i + 1),
                 val_accuracy=0.1 * i, learning_rate=0.1,
                 hessian_max_eigenvalue=2.0 + i) for i in range(4)]
    plain = [dict(r, hessian_max_eigenvalue=math.nan) for r in rows]
    plot_compare({"large-batch": rows, "two-phase": plain},
                 str(tmp_path / "with.png"))
    plot_compare({"a": plain}, str(tmp_path / "without.png"))
    # 6 inches per panel at 100 dpi: three panels with eigenvalues, else two.
    assert _png_width(tmp_path / "with.png") == 1800
    assert _png_width(tmp_path / "without.png") == 1200


def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    return (int.from_bytes(header[16:20], "big"),
            int.from_bytes(header[20:24], "big"))


def _rows(count):
    return [dict(epoch=i + 1, phase="exploration", loss=1.0 / (i + 1),
                 val_accuracy=0.1 * i, learning_rate=0.1,
                 hessian_max_eigenvalue=math.nan) for i in range(count)]


def test_compare_draws_one_row_of_panels_per_epoch_budget(tmp_path):
    from keras_lrphase.training.plots import budget_groups

    histories = {"SGD": _rows(8), "SGD decay": _rows(8), "GD": _rows(40),
                 "GD early stop": _rows(25)}
    budgets = {"SGD": 8, "SGD decay": 8, "GD": 40, "GD early stop": 40}
    # Runs of one budget share a row, in the order of the budgets; a run
    # that stopped early stays with its budget.
    assert budget_groups(histories, budgets) == [
        (8, ["SGD", "SGD decay"]), (40, ["GD", "GD early stop"])]
    assert budget_groups(histories, None) == [(None, list(histories))]
    assert budget_groups(histories, dict.fromkeys(histories, 8)) == [
        (None, list(histories))]
    plot_compare(histories, str(tmp_path / "two.png"), budgets=budgets)
    plot_compare(histories, str(tmp_path / "one.png"))
    # 4.5 inches per row of panels at 100 dpi.
    assert _png_size(tmp_path / "two.png") == (1200, 900)
    assert _png_size(tmp_path / "one.png") == (1200, 450)


def test_compare_refuses_budgets_that_miss_a_run(tmp_path):
    with pytest.raises(ValueError, match="budgets.*'GD'"):
        plot_compare({"SGD": _rows(4), "GD": _rows(8)},
                     str(tmp_path / "x.png"), budgets={"SGD": 4})


def test_compare_notes_the_dotted_decay_lines_only_where_drawn(tmp_path, monkeypatch):
    import matplotlib.axes

    texts = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, *a, **k: (
        texts.append(a[2]), original(self, *a, **k))[1])
    flat = [dict(r, learning_rate=0.1) for r in _rows(6)]
    cut = [dict(r, learning_rate=0.1 if r["epoch"] < 4 else 0.01)
           for r in _rows(6)]
    plot_compare({"flat": flat}, str(tmp_path / "flat.png"))
    assert "dotted: first LR decay" not in texts
    plot_compare({"flat": flat, "cut": cut}, str(tmp_path / "cut.png"))
    assert texts.count("dotted: first LR decay") == 1
    assert "not computed" not in texts  # no run has an eigenvalue panel
    # Two budgets, one with eigenvalues: the other's panel says it has none.
    texts.clear()
    measured = [dict(r, hessian_max_eigenvalue=2.0) for r in _rows(8)]
    plot_compare({"flat": flat, "measured": measured},
                 str(tmp_path / "budgets.png"),
                 budgets={"flat": 6, "measured": 8})
    assert texts == ["not computed"]


def _drawn(monkeypatch):
    """Records the text of every figure saved: title, legends, panel titles,
    labels, notes and the accuracy panel's limits."""
    import matplotlib.figure

    seen = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        axes = fig.axes
        legends = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        legends += [t.get_text() for ax in axes if ax.get_legend()
                    for t in ax.get_legend().get_texts()]
        seen.append({
            "title": fig.get_suptitle() or None,
            "legends": legends,
            "titles": [ax.get_title() for ax in axes],
            "ylabels": [ax.get_ylabel() for ax in axes],
            "texts": [t.get_text() for ax in axes for t in ax.texts],
            "ylim": [ax.get_ylim() for ax in axes],
            "styles": [[line.get_linestyle() for line in ax.get_lines()
                        if len(set(line.get_xdata())) > 1] for ax in axes],
            "vlines": [sorted(line.get_xdata()[0] for line in ax.get_lines()
                              if len(set(line.get_xdata())) == 1
                              and len(line.get_xdata()) == 2)
                       for ax in axes],
        })
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def _run_rows(phases, lrs, losses):
    return [dict(epoch=i + 1, phase=p, loss=loss, val_accuracy=0.5 + 0.01 * i,
                 learning_rate=lr, hessian_max_eigenvalue=1.0 + i)
            for i, (p, lr, loss) in enumerate(zip(phases, lrs, losses))]


def test_curves_name_the_warmup_the_plateau_the_extra_epochs_and_the_phase(
        tmp_path, monkeypatch):
    seen = _drawn(monkeypatch)
    phases = ["warmup"] * 2 + ["exploration"] * 6 + ["convergence"] * 4
    rows = _run_rows(phases, [0.05, 0.1] + [0.1] * 6 + [0.1, 0.05, 0.05, 0.025],
                     [1.0 / (i + 1) for i in range(12)])
    # summary.json's epochs: plateau after epoch 4, switch after epoch 8.
    plot_curves(rows, str(tmp_path / "c.png"),
                title="two-phase (seed 3): small-cnn on digits, batch 512",
                marks={"plateau_epoch": 4, "switch_epoch": 8,
                       "decay_epochs": [9, 11]},
                schedule="two-phase")
    (fig,) = seen
    assert fig["title"] == "two-phase (seed 3): small-cnn on digits, batch 512"
    assert fig["legends"] == ["warmup", "loss plateau (after epoch 4)",
                              "extra exploration epochs (5-8)",
                              "convergence phase"]
    # The plateau line sits between the points of epochs 4 and 5.
    assert all(v == [4.5] for v in fig["vlines"])
    # A step decay's grey band is the epochs after its first decay.
    seen.clear()
    step = _run_rows(["warmup"] + ["exploration"] * 3 + ["convergence"] * 2,
                     [0.05, 0.1, 0.1, 0.1, 0.01, 0.01], [1.0] * 6)
    plot_curves(step, str(tmp_path / "s.png"), title="t",
                marks={"plateau_epoch": None, "decay_epochs": [4]},
                schedule="step")
    assert seen[0]["legends"] == ["warmup", "after the first LR decay"]
    # A plateau whose switch falls beyond the budget says so.
    seen.clear()
    plot_curves(rows[:8], str(tmp_path / "b.png"),
                marks={"plateau_epoch": 6, "exploration_epochs": None},
                schedule="two-phase")
    assert seen[0]["legends"] == [
        "warmup", "loss plateau (after epoch 6)",
        "extra exploration epochs (switch beyond the budget)"]


def test_compare_draws_seed_bands_every_decay_the_switch_and_a_zoomed_accuracy(
        tmp_path, monkeypatch):
    seen = _drawn(monkeypatch)
    n = 20
    base = [dict(epoch=e, phase="exploration", loss=2.0 / e,
                 val_accuracy=min(0.95, 0.1 + 0.1 * e), learning_rate=0.1,
                 hessian_max_eigenvalue=2.0) for e in range(1, n + 1)]
    # Two-phase is large-batch's run until epoch 12 (identical rows).
    other = [dict(r, loss=r["loss"] * (0.9 if r["epoch"] > 12 else 1.0),
                  val_accuracy=r["val_accuracy"] - (0.01 if r["epoch"] > 12 else 0))
             for r in base]
    seeds = {"large-batch": [base, [dict(r, val_accuracy=r["val_accuracy"] - 0.02)
                                    for r in base]],
             "two-phase": [other, other]}
    marks = {"large-batch": {"decay_epochs": [10, 15]},
             "two-phase": {"decay_epochs": [14, 16, 18], "switch_epoch": 12}}
    plot_compare({"large-batch": base, "two-phase": other},
                 str(tmp_path / "c.png"), title="Offline demo: two-phase",
                 seeds=seeds, marks=marks)
    (fig,) = seen
    assert fig["title"] == ("Offline demo: two-phase\n"
                            "curves: mean over 2 seeds; band: their range")
    assert fig["titles"][0] == "validation accuracy (axis: last half of training)"
    assert fig["titles"][2] == "first seed"
    # Different line styles, so the coinciding curves both show.
    assert fig["styles"][0][:2] == ["-", "--"]
    assert fig["texts"] == ["dotted: LR decays\ndash-dot: two-phase switch\n"
                            "large-batch and two-phase coincide up to epoch 12\n"
                            "(marks: first seed)"]
    # Every decay and the switch, after their epochs (x = epoch + 0.5).
    assert fig["vlines"][0] == [10.5, 12.5, 14.5, 15.5, 16.5, 18.5]
    # The accuracy axis spans the last half: 0.93 (seed 2's low) to 0.95.
    low, high = fig["ylim"][0]
    assert 0.9 < low < 0.93 and 0.95 < high <= 0.96


def test_compare_names_each_group_of_coinciding_runs_once(tmp_path,
                                                            monkeypatch):
    seen = _drawn(monkeypatch)
    base = [dict(epoch=e, phase="exploration", loss=2.0 / e,
                 val_accuracy=0.1 * e, learning_rate=0.1,
                 hessian_max_eigenvalue=2.0) for e in range(1, 13)]

    def parted(after, factor):
        return [dict(r, loss=r["loss"] * (factor if r["epoch"] > after else 1))
                for r in base]

    # a, b and c part after epoch 8 (each its own way); d after epoch 5.
    histories = {"a": base, "b": parted(8, 0.9), "c": parted(8, 0.8),
                 "d": parted(5, 0.7)}
    plot_compare(histories, str(tmp_path / "c.png"), title="t")
    (fig,) = seen
    # No LR decays (a constant rate): only the two groups are noted.
    assert fig["texts"] == ["all runs coincide up to epoch 5\n"
                            "a, b and c coincide up to epoch 8"]
