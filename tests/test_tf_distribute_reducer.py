"""TfDistributeReducer: one process, MirroredStrategy, and two MWMS workers."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from worker_processes import free_ports
from worker_processes import run_together

from keras_lrphase.distributed import default_reducer
from keras_lrphase.distributed.reduction import LocalReducer
from keras_lrphase.distributed.tf_distribute import TfDistributeReducer

on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute needs the TensorFlow backend",
)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    rank, ports, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": rank}})
    import numpy as np, tensorflow as tf, keras
    import keras_lrphase as lrp
    from keras_lrphase.distributed import default_reducer
    from keras_lrphase.distributed.tf_distribute import TfDistributeReducer

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    result = {"outside_scope": type(default_reducer()).__name__}
    reducer = TfDistributeReducer(strategy)
    result.update(chief=reducer.is_chief, world_size=reducer.world_size,
                  mean=reducer.reduce_mean({"loss": [0.1, 1.1][rank],
                                            "h": [1 / 3, 2 / 3 + 1e-9][rank]}))

    # A custom training loop under the strategy, the package's TwoPhaseLR
    # driven by hand: each worker's scripted eigenvalues differ; alone,
    # worker 0 would decay at epochs 4 and 6, worker 1 never; their mean
    # decays at 5 and 7, on both.
    LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.1]
    EIGENVALUES = [[1.0, 2.0, 3.0, 4.0, 5.0], [3.1, 0.1, 0.1, 0.1, 0.1]][rank]

    class Result:
        def __init__(self, value):
            self.value, self.vector, self.iterations = value, [np.zeros(2)], 1

    calls = []

    def estimator(model, x, y, initial_vector=None):
        calls.append(1)
        return Result(EIGENVALUES[len(calls) - 1])

    class ScriptedLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = LOSSES[epoch]

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events, self.logs = [], []

        def on_train_begin(self, logs=None):
            self.events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(f"epoch_begin {epoch}")

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append(dict(logs))

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.5),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.integers(0, 3, size=32)
    x, y = x[16 * rank:16 * (rank + 1)], y[16 * rank:16 * (rank + 1)]
    with strategy.scope():
        result["in_scope"] = type(default_reducer()).__name__
        model = build()
        two_phase = lrp.TwoPhaseLR((x, y), 8, plateau_patience=1,
                                   estimator=estimator)
    result["callback_reducer"] = type(two_phase.reducer).__name__
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)  # x, y: this worker's shard
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8).with_options(options))
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None)

    @tf.function
    def train_step(xb, yb):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(
                    per_example(yb, model(xb, training=True)),
                    global_batch_size=16)
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(
                zip(gradients, model.trainable_variables))
        strategy.run(step, args=(xb, yb))

    record = Record()
    callbacks = keras.callbacks.CallbackList(
        [ScriptedLoss(), two_phase, record], model=model, epochs=8, steps=2)
    callbacks.on_train_begin()
    for epoch in range(8):
        callbacks.on_epoch_begin(epoch)
        for xb, yb in dataset:
            train_step(xb, yb)
        callbacks.on_epoch_end(epoch, {})
    callbacks.on_train_end()
    result.update(
        lr=[logs["learning_rate"] for logs in record.logs],
        phase=[logs["lrphase_phase"] for logs in record.logs],
        eigenvalue=[logs["hessian_max_eigenvalue"] for logs in record.logs],
        final_lr=float(model.optimizer.learning_rate.numpy()),
        weights=[w.tolist() for w in model.get_weights()])

    def fit_error(model):
        record = Record()
        try:
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
                record, lrp.TwoPhaseLR((x, y), 8, estimator=estimator)])
        except Exception as error:
            return {"type": type(error).__name__, "message": str(error),
                    "events": record.events,
                    "steps": int(model.optimizer.iterations.numpy())}
        return None

    # `fit` of a model built in the scope: Keras fails before any callback
    # (keras-team/keras#20585). Built outside and fit in the scope: it
    # reaches the callbacks, and TwoPhaseLR refuses before the first epoch.
    with strategy.scope():
        inside = build()
    result["fit_in_scope"] = fit_error(inside)
    outside = build()
    with strategy.scope():
        result["fit_outside_scope"] = fit_error(outside)
    with open(os.path.join(out, f"worker{rank}.json"), "w") as f:
        json.dump(result, f)
    """
)


@pytest.mark.slow  # the main job of .ci/run runs it
def test_two_multi_worker_mirrored_workers(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    ports = ",".join(map(str, free_ports(2)))
    run_together([[sys.executable, str(script), str(rank), ports, str(tmp_path)]
                  for rank in (0, 1)], env)
    w0, w1 = (json.loads((tmp_path / f"worker{rank}.json").read_text())
              for rank in (0, 1))

    # (i) The exact float64 mean of the two workers' values, on both.
    expected = {"loss": (0.1 + 1.1) / 2, "h": (1 / 3 + (2 / 3 + 1e-9)) / 2}
    assert w0["mean"] == w1["mean"] == expected
    assert (w0["chief"], w1["chief"]) == (True, False)
    assert w0["world_size"] == w1["world_size"] == 2
    # (ii) Picked by default inside the strategy's scope only.
    for worker in (w0, w1):
        assert worker["outside_scope"] == "LocalReducer"
        assert worker["in_scope"] == "TfDistributeReducer"
        assert worker["callback_reducer"] == "TfDistributeReducer"
    # The custom loop: the decays of the averaged eigenvalues (epochs 5
    # and 7), identical training on both workers.
    means = [float("nan")] * 3 + [
        (a + b) / 2 for a, b in zip([1.0, 2.0, 3.0, 4.0, 5.0],
                                    [3.1, 0.1, 0.1, 0.1, 0.1])]
    for worker in (w0, w1):
        assert worker["phase"] == [0, 0, 0, 0, 1, 1, 1, 1]
        assert worker["lr"] == [0.5] * 6 + [0.25, 0.25]
        assert worker["final_lr"] == 0.125
        np.testing.assert_array_equal(worker["eigenvalue"], means)
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(a, b)
    # (iii) `fit` under the multi-worker strategy never trains an epoch.
    for worker in (w0, w1):
        keras_error = worker["fit_in_scope"]
        assert keras_error is not None and keras_error["steps"] == 0
        if keras_error["type"] == "ValueError":  # Keras 3.15.1: #20585
            assert "PerReplica" in keras_error["message"]
            assert keras_error["events"] == []
        else:  # a Keras that gets further meets the package's check
            assert keras_error["type"] == "RuntimeError", keras_error
        refused = worker["fit_outside_scope"]
        assert refused["type"] == "RuntimeError"
        assert refused["events"] == ["train_begin"]
        assert refused["steps"] == 0
        for part in ("TwoPhaseLR cannot run in `model.fit`",
                     "MultiWorkerMirroredStrategy (2 workers",
                     "keras-team/keras issue 20585",
                     "keras_lrphase.distributed.horovod",
                     "tf.distribute.MirroredStrategy` on one host",
                     "TfDistributeReducer"):
            assert part in refused["message"]


@on_tensorflow
def test_identity_in_one_process_and_under_mirrored_strategy():
    import tensorflow as tf

    values = {"loss": 0.25, "hessian_max_eigenvalue": np.float32(2.5)}
    reducer = TfDistributeReducer()
    assert reducer.strategy is tf.distribute.get_strategy()
    assert (reducer.is_chief, reducer.world_size) == (True, 1)
    reduced = reducer.reduce_mean(values)
    assert reduced == {"loss": 0.25, "hessian_max_eigenvalue": 2.5}
    assert all(type(v) is float for v in reduced.values())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        assert isinstance(default_reducer(), LocalReducer)
        inside = TfDistributeReducer()
    assert inside.strategy is strategy
    assert (inside.is_chief, inside.world_size) == (True, 1)
    assert inside.reduce_mean(values) == reduced
    assert inside.reduce_mean({}) == {}
    # A single-worker MultiWorkerMirroredStrategy (no TF_CONFIG): one worker.
    if "TF_CONFIG" not in os.environ:
        single = TfDistributeReducer(tf.distribute.MultiWorkerMirroredStrategy())
        assert (single.is_chief, single.world_size) == (True, 1)
        assert single.reduce_mean(values) == reduced


@on_tensorflow
def test_bad_arguments():
    with pytest.raises(TypeError, match=r"Argument `strategy` must be a "
                       r"tf.distribute.Strategy or None. Received: "
                       r"strategy='mirrored'"):
        TfDistributeReducer("mirrored")
    with pytest.raises(ValueError, match=r"values\['loss'\]='low'"):
        TfDistributeReducer().reduce_mean({"loss": "low"})


@pytest.mark.jax
def test_outside_tensorflow_without_importing_it():
    code = textwrap.dedent(
        """
        import sys
        import keras
        from keras_lrphase.distributed import default_reducer
        from keras_lrphase.distributed.tf_distribute import TfDistributeReducer
        from keras_lrphase.distributed.tf_distribute import check_fit_strategy
        assert type(default_reducer()).__name__ == "LocalReducer"
        check_fit_strategy(keras.Sequential(), "TwoPhaseLR")
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        try:
            TfDistributeReducer()
        except RuntimeError as error:
            print(error)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = "needs the TensorFlow backend. Received: KERAS_BACKEND='jax'"
    assert expected in out.stdout
