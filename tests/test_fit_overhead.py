"""What a `fit` call repeats with the package's callbacks, and its benchmark.

`benchmarks/fit_overhead.py` runs on a tiny setting, on the test's backend:
the timings of a smoke run mean nothing; what it asserts is that the script
runs and that no `fit` call of its timed rounds traced the train step again.
"""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase import HessianMonitor
from keras_lrphase import TwoPhaseLR
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator

pytestmark = pytest.mark.backend_neutral

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                      "benchmarks", "fit_overhead.py")


def test_smoke_run_reuses_the_train_steps():
    backend = keras.backend.backend()
    out = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--backends", backend],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["backend"], result["setting"], result["rounds"]) == (
        backend, "smoke", 2)
    assert sorted(result["configs"]) == sorted([
        "plain", "warmup", "warmup-ramp", "two-phase", "hessian-monitor",
        "combined", "hessian-every-epoch"])
    for name, entry in result["configs"].items():
        assert entry["new_train_functions"] == 0, name
        assert entry["round_s"] > 0 and math.isfinite(entry["ratio"]), name
    assert result["configs"]["hessian-every-epoch"]["estimate_s"] > 0


def budget_differs(epochs):
    return pytest.warns(UserWarning, match=(
        "TwoPhaseLR: its epoch budget is epochs=100, but `fit` runs "
        f"epochs={epochs}\\."))


def test_the_hessian_batch_is_checked_once_per_model_and_compiled_loss(monkeypatch):
    checks = []
    check = HessianEigenvalueEstimator.check

    def counted(self, model, x, y, argument="data"):
        checks.append(argument)
        return check(self, model, x, y, argument=argument)

    monkeypatch.setattr(HessianEigenvalueEstimator, "check", counted)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.integers(0, 2, 16)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # One shared provider: the two callbacks check the batch once.
    callbacks = [HessianMonitor((x, y), frequency=100),
                 TwoPhaseLR((x, y), 100, plateau_patience=100)]
    # Its budget of 100 epochs is not fit's: TwoPhaseLR says so every time.
    for r in range(3):
        with budget_differs(r + 1):
            model.fit(x, y, batch_size=8, initial_epoch=r, epochs=r + 1,
                      verbose=0, callbacks=callbacks)
    assert checks == ["data"]
    model.compile("sgd", "sparse_categorical_crossentropy")  # a new loss
    with budget_differs(1):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
    assert checks == ["data", "data"]
