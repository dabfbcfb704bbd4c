"""One rank of the Horovod tests: `horovodrun -np 2 ... python horovod_worker.py OUT`.

Runs every scenario of tests/test_horovod.py in one job (one start-up of
the ranks) and writes `OUT/rank{r}.json`; the assertions are in the test.

* average: `DistributedOptimizer` around SGD, LARS, LARSWrapper and SGD
  with gradient accumulation and clipping; rank 0 also trains one process
  on the concatenated batches (the reference) and saves its model.
* broadcast: rank 1 starts from other weights and another learning rate;
  what both ranks hold after `BroadcastGlobalVariablesCallback`.
* metric_average: each rank's own loss, and the averaged logs.
* decisions: a two-phase run whose ranks' eigenvalues differ.
* resume: that run uninterrupted, and interrupted and resumed.
"""

import json
import os
import sys

import numpy as np

rank_out = sys.argv[1]

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import horovod.tensorflow as hvd  # noqa: E402
import keras  # noqa: E402

from keras_lrphase.distributed import default_reducer  # noqa: E402
from keras_lrphase.distributed import horovod as lrp_hvd  # noqa: E402

result = {}
# Before `hvd.init()`: one process, the local reducer; Horovod refuses.
result["reducer_before_init"] = type(default_reducer()).__name__
try:
    lrp_hvd.HorovodReducer()
except RuntimeError as error:
    result["uninitialised"] = str(error)

hvd.init()
import keras_lrphase as lrp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scripted_training import Crash  # noqa: E402
from scripted_training import EpochRecorder  # noqa: E402
from scripted_training import Interrupted  # noqa: E402
from scripted_training import ScriptedLoss  # noqa: E402

rank, size = hvd.rank(), hvd.size()
assert size == 2, size
result["reducer"] = type(default_reducer()).__name__


def arrays(v):
    return [np.asarray(keras.ops.convert_to_numpy(w)).tolist() for w in v]


def data(samples=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 4)).astype("float32")
    y = rng.integers(0, classes, size=samples)
    return x, y


def shard(x, y):
    half = len(x) // size
    return x[half * rank: half * (rank + 1)], y[half * rank: half * (rank + 1)]


def model_with(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])
    model.compile(optimizer,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# -- average ----------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.5, momentum=0.9),
    "lars": lambda: lrp.LARS(2.0, momentum=0.9, weight_decay=1e-3,
                             trust_coefficient=0.01),
    "lars_wrapper": lambda: lrp.LARSWrapper(
        keras.optimizers.SGD(0.5, momentum=0.9), trust_coefficient=0.01),
    "sgd_accumulated_clipped": lambda: keras.optimizers.SGD(
        0.5, momentum=0.9, global_clipnorm=0.05, gradient_accumulation_steps=2),
}
BATCH = 4  # per rank; the reference trains on 2 x 4
x_all, y_all = data()
x_own, y_own = shard(x_all, y_all)
# Reference step k: rank 0's batch k followed by rank 1's batch k.
half = len(x_all) // size
order = np.concatenate([
    np.arange(r * half + k * BATCH, r * half + (k + 1) * BATCH)
    for k in range(half // BATCH) for r in range(size)
])
average = {}
for name, make in OPTIMIZERS.items():
    print(f"rank {rank}: average {name}", flush=True)
    model = model_with(lrp_hvd.DistributedOptimizer(make()))
    model.fit(x_own, y_own, batch_size=BATCH, epochs=2, shuffle=False,
              verbose=0,
              callbacks=[lrp_hvd.BroadcastGlobalVariablesCallback(0)])
    entry = {"weights": arrays(model.weights),
             "optimizer": arrays(model.optimizer.variables)}
    if rank == 0:
        reference = model_with(make())
        reference.fit(x_all[order], y_all[order], batch_size=BATCH * size,
                      epochs=2, shuffle=False, verbose=0)
        entry["reference_weights"] = arrays(reference.weights)
        entry["reference_optimizer"] = arrays(reference.optimizer.variables)
        if name == "lars":
            model.save(os.path.join(rank_out, "lars.keras"))
    average[name] = entry
result["average"] = average

# -- broadcast --------------------------------------------------------------


class Snapshot(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = arrays(self.model.weights)
        self.learning_rate = float(self.model.optimizer.learning_rate)


print(f"rank {rank}: broadcast", flush=True)
model = model_with(lrp_hvd.DistributedOptimizer(
    keras.optimizers.SGD(0.1 if rank == 0 else 0.2, momentum=0.9)),
    seed=rank)
before = arrays(model.weights)
snapshot = Snapshot()
model.fit(x_own, y_own, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
          callbacks=[lrp_hvd.BroadcastGlobalVariablesCallback(0), snapshot])
result["broadcast"] = {"before": before, "after": snapshot.weights,
                       "learning_rate": snapshot.learning_rate,
                       "final": arrays(model.weights)}

# -- metric_average ---------------------------------------------------------


class OwnLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(logs["loss"])


own = OwnLoss()
history = model_with(lrp_hvd.DistributedOptimizer(
    keras.optimizers.SGD(0.1))).fit(
    x_own, y_own, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
    callbacks=[own, lrp_hvd.MetricAverageCallback(),
               lrp_hvd.BroadcastGlobalVariablesCallback(0)])
result["metric_average"] = {"own": own.values,
                            "averaged": history.history["loss"]}

# -- decisions and resume ---------------------------------------------------
LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.1]


class RawEigenvalue(keras.callbacks.Callback):
    """This rank's own estimate, before the reduction."""

    def __init__(self, monitor, values):
        super().__init__()
        self.monitor, self.values = monitor, values

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(self.monitor.last_result.value)


def two_phase_run(tag, crash_at=None, rows=None, raw=None):
    """Trains 8 epochs; with `crash_at`, interrupted there and resumed."""
    rows = [] if rows is None else rows
    raw = [] if raw is None else raw
    backup = os.path.join(rank_out, f"{tag}_backup{rank}")
    x, y = data(64, seed=1)
    x, y = shard(x, y)

    def attempt(crash):
        model = model_with(lrp_hvd.DistributedOptimizer(
            lrp.LARS(2.0, momentum=0.9)))
        two_phase = lrp.TwoPhaseLR(
            (x, y), 8, plateau_patience=1,
            state_path=os.path.join(rank_out, f"{tag}_state{rank}.json"))
        monitor = lrp.HessianMonitor((x, y), seed=0)
        callbacks = [lrp_hvd.MetricAverageCallback(),
                     lrp_hvd.BroadcastGlobalVariablesCallback(0),
                     ScriptedLoss(LOSSES), lrp.GradualWarmup(1), two_phase,
                     monitor, RawEigenvalue(monitor, raw), EpochRecorder(rows),
                     lrp.AtomicBackupAndRestore(backup)]
        if crash is not None:
            callbacks.append(Crash(crash))
        model.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False,
                  callbacks=callbacks)
        return model, two_phase

    try:
        model, two_phase = attempt(crash_at)
    except Interrupted:
        model, two_phase = attempt(None)
    return {
        "reducer": type(two_phase.reducer).__name__,
        "chief": two_phase.reducer.is_chief,
        "lr": [row[1] for row in rows],
        "phase": [row[2] for row in rows],
        "eigenvalue": [row[3] for row in rows],
        "raw": raw,
        "epochs": [row[0] for row in rows],
        "weights": arrays(model.weights),
        "optimizer": arrays(model.optimizer.variables),
    }


print(f"rank {rank}: decisions", flush=True)
result["decisions"] = two_phase_run("decisions")
print(f"rank {rank}: resume", flush=True)
result["resume"] = two_phase_run("resume", crash_at=5)

with open(os.path.join(rank_out, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
