import math

from keras_lrphase.training.plots import phase_spans
from keras_lrphase.training.plots import plot_compare
from keras_lrphase.training.plots import plot_curves


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
