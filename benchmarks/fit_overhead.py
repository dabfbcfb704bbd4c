"""What one more `fit` call costs with the package's callbacks, against a plain `fit`.

Programs that call `fit` once per round (keras.io's transfer learning, a
custom outer loop) pay, at every call, whatever the callbacks add beyond
their epochs: a new trace of the train step costs a small CNN 1 to 3 s, more
than its epoch. For each configuration this trains its own small CNN on
random images in rounds of `model.fit(..., initial_epoch=r, epochs=r + 1)`:
`--warm-rounds` untimed rounds (the first traces the train step), then
`--rounds` timed rounds, the configurations taking turns round by round so
that drifts in the machine's load hit them alike. It prints, per backend
(each in its own process), one line of JSON: the median seconds of a round,
its ratio to the plain rounds measured in the same process, and the number
of train functions the timed rounds used that the warm rounds had not
(`new_train_functions`: 0 when no `fit` call traced the step again).

Configurations (each also trains the same epochs without callbacks as
`plain`):

* `warmup`: `GradualWarmup(1)`: the ramp ends in the first warm round.
* `warmup-ramp`: `GradualWarmup` whose ramp lasts beyond the timed rounds.
* `two-phase`: `TwoPhaseLR` in its first phase (no eigenvalue computed).
* `hessian-monitor`: `HessianMonitor` with a frequency beyond the rounds
  (no eigenvalue computed: the per-`fit` cost alone).
* `combined`: `GradualWarmup(1)`, `TwoPhaseLR` and `HessianMonitor` as above.
* `hessian-every-epoch`: `HessianMonitor(frequency=1)`: one estimate per
  round, reported with the seconds of its estimates (`estimate_s`), which
  a plain `fit` does not do; its ratio is not a per-`fit` overhead.

Target: every ratio but `hessian-every-epoch` within 1.10.

    python benchmarks/fit_overhead.py [--backends tensorflow,jax,torch]
        [--configs warmup,two-phase,...] [--smoke]

(8 timed rounds after 2 warm ones; `--smoke`: 2 and 2, on tiny images.)
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CONFIGS = (
    "plain", "warmup", "warmup-ramp", "two-phase", "hessian-monitor",
    "combined", "hessian-every-epoch",
)
BACKENDS = ("tensorflow", "jax", "torch")
SETTINGS = {
    # samples, image side, batch size, timed rounds, warm rounds
    "full": dict(samples=1024, side=32, batch_size=64, rounds=8, warm_rounds=2),
    "smoke": dict(samples=32, side=8, batch_size=16, rounds=2, warm_rounds=2),
}


def _callbacks(name, hessian_data, ramp_epochs, keras_lrphase):
    never = 10_000  # no eigenvalue, no decision within the rounds
    warmup = keras_lrphase.GradualWarmup
    two_phase = keras_lrphase.TwoPhaseLR
    monitor = keras_lrphase.HessianMonitor
    if name == "plain":
        return []
    if name == "warmup":
        return [warmup(1)]
    if name == "warmup-ramp":
        return [warmup(ramp_epochs)]
    if name == "two-phase":
        return [two_phase(hessian_data, never, plateau_patience=never)]
    if name == "hessian-monitor":
        return [monitor(hessian_data, frequency=never)]
    if name == "combined":
        return [warmup(1), two_phase(hessian_data, never, plateau_patience=never),
                monitor(hessian_data, frequency=never)]
    if name == "hessian-every-epoch":
        return [monitor(hessian_data, frequency=1)]
    raise ValueError(f"Unknown configuration: {name!r}")


def _model(keras, side):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((side, side, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def measure(setting, configs):
    """Runs the rounds on this process's backend; returns the result dict."""
    import keras
    import numpy as np

    import keras_lrphase

    # TwoPhaseLR warns at each `fit` that its budget is not fit's `epochs`.
    warnings.simplefilter("ignore")
    s = SETTINGS[setting]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(s["samples"], s["side"], s["side"], 3)).astype("float32")
    y = rng.integers(0, 10, s["samples"]).astype("int32")
    hessian_data = (x[:32], y[:32])
    total = s["warm_rounds"] + s["rounds"]
    runs = {}
    for name in configs:
        functions = []
        seen = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, l, f=functions, n=name: f.append(
                runs[n]["model"].train_function))
        runs[name] = {
            "model": _model(keras, s["side"]),
            # The callbacks stay the same objects across rounds, as in a
            # program that builds them once.
            "callbacks": _callbacks(name, hessian_data, total + 2, keras_lrphase)
            + [seen],
            "functions": functions,
            "seconds": [],
            "estimate_s": [],
        }
    for r in range(total):
        for name in configs:
            run = runs[name]
            start = time.perf_counter()
            run["model"].fit(x, y, batch_size=s["batch_size"], initial_epoch=r,
                             epochs=r + 1, verbose=0, callbacks=run["callbacks"])
            seconds = time.perf_counter() - start
            if r >= s["warm_rounds"]:
                run["seconds"].append(seconds)
    plain = statistics.median(runs["plain"]["seconds"])
    out = {"backend": keras.backend.backend(), "setting": setting,
           "rounds": s["rounds"], "plain_s": round(plain, 4), "configs": {}}
    for name in configs:
        run = runs[name]
        median = statistics.median(run["seconds"])
        warm = {id(f) for f in run["functions"][: s["warm_rounds"]]}
        timed = {id(f) for f in run["functions"][s["warm_rounds"]:]}
        entry = {
            "round_s": round(median, 4),
            "ratio": round(median / plain, 3),
            "new_train_functions": len(timed - warm),
        }
        out["configs"][name] = entry
    if "hessian-every-epoch" in configs:
        out["configs"]["hessian-every-epoch"]["estimate_s"] = round(
            _estimate_seconds(runs["hessian-every-epoch"]["model"], hessian_data), 4)
    return out


def _estimate_seconds(model, data):
    """Median seconds of one more estimate, as the monitor makes it."""
    from keras_lrphase.providers.hessian_eigenvalue import HessianEigenvalueProvider

    provider = HessianEigenvalueProvider(data)
    provider.compute(model)
    times = []
    for _ in range(3):
        provider._computed_at = None  # force a new estimate at the same step
        start = time.perf_counter()
        provider.compute(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=None,
                        help="comma-separated; default: every installed backend")
    parser.add_argument("--configs", default=",".join(CONFIGS[1:]),
                        help="comma-separated, of: " + ", ".join(CONFIGS[1:]))
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting, for CI (timings meaningless)")
    parser.add_argument("--measure", action="store_true",
                        help=argparse.SUPPRESS)  # the per-backend child
    args = parser.parse_args(argv)
    configs = ["plain"] + [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {CONFIGS[1:]}")
    setting = "smoke" if args.smoke else "full"
    if args.measure:
        print(json.dumps(measure(setting, configs)))
        return None
    backends = (args.backends.split(",") if args.backends else
                [b for b in BACKENDS if importlib.util.find_spec(b) is not None])
    results = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, os.path.abspath(__file__), "--measure",
                   "--configs", ",".join(configs[1:])] + (
                       ["--smoke"] if args.smoke else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"fit_overhead: the {backend} run failed")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(result))
        results.append(result)
    return results


if __name__ == "__main__":
    main()
