"""Two JAX processes (`jax.distributed`, DataParallel) deciding alike."""

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

pytestmark = pytest.mark.jax

WORKER_TEMPLATE = textwrap.dedent(
    """
    import json, os, sys
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import numpy as np
    import keras
    import jax
    from keras_lrphase.distributed import default_reducer
    from keras_lrphase.distributed.jax_process import JaxProcessReducer

    # Before `jax.distributed.initialize`: one process, the local reducer.
    assert type(default_reducer()).__name__ == "LocalReducer"
    try:
        JaxProcessReducer()
    except RuntimeError as error:
        uninitialised = str(error)
    jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                               process_id=rank)
    import keras_lrphase as lrp

    LOSSES = [1.0, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.1]

    class ScriptedLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = LOSSES[epoch]

    class RawEigenvalue(keras.callbacks.Callback):
        # This process's own estimate, before the reduction.
        def __init__(self, monitor):
            super().__init__()
            self.monitor, self.values = monitor, []

        def on_epoch_end(self, epoch, logs=None):
            self.values.append(self.monitor.last_result.value)

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(auto_shard_dataset=False))
    exec(PLAIN_RUN)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, size=64)
    shard = slice(32 * rank, 32 * (rank + 1))  # this process's samples
    x, y = x[shard], y[shard]
    def two_phase_model():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)),
                                  keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(3)])
        model.compile(lrp.LARS(2.0, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        return model

    model = two_phase_model()
    two_phase = lrp.TwoPhaseLR(
        (x, y), 8, plateau_patience=1,
        state_path=os.path.join(out, f"state{rank}.json"))
    monitor = lrp.HessianMonitor((x, y), seed=0)
    raw = RawEigenvalue(monitor)
    history = model.fit(
        x, y, batch_size=8, epochs=8, verbose=0, shuffle=False,
        callbacks=[ScriptedLoss(), lrp.GradualWarmup(1), two_phase, monitor,
                   raw])
    plain = {name: plain_run(name, x, y, 8) for name in ("sgd", "lars")}

    # The same run interrupted at the start of epoch 5 and resumed from
    # each process's own BackupAndRestore folder.
    class Interrupted(RuntimeError):
        pass

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 5:
                raise Interrupted()

    class Rows(keras.callbacks.Callback):
        def __init__(self, rows):
            super().__init__()
            self.rows = rows

        def on_epoch_end(self, epoch, logs=None):
            self.rows[epoch] = [float(logs[k]) for k in (
                "learning_rate", "lrphase_phase", "hessian_max_eigenvalue")]

    rows = {}
    for crash in (True, False):
        model = two_phase_model()
        callbacks = [ScriptedLoss(), lrp.GradualWarmup(1),
                     lrp.TwoPhaseLR((x, y), 8, plateau_patience=1),
                     lrp.HessianMonitor((x, y), seed=0), Rows(rows),
                     lrp.AtomicBackupAndRestore(os.path.join(out, f"backup{rank}"))]
        try:
            model.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False,
                      callbacks=callbacks + ([Crash()] if crash else []))
        except Interrupted:
            assert sorted(rows) == [0, 1, 2, 3, 4]
    resumed = {"rows": [rows[e] for e in range(8)],
               "weights": [w.tolist() for w in model.get_weights()]}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({
            "plain": plain,
            "resumed": resumed,
            "uninitialised": uninitialised,
            "reducer": type(two_phase.reducer).__name__,
            "chief": two_phase.reducer.is_chief,
            "lr": history.history["learning_rate"],
            "phase": history.history["lrphase_phase"],
            "eigenvalue": history.history["hessian_max_eigenvalue"],
            "raw": raw.values,
            "weights": [w.tolist() for w in model.get_weights()],
        }, f)
    """
)


# Two epochs of SGD or LARS without callbacks: on each process's shard with
# batch 8 (global batch 16), or in one process on the concatenated batches.
PLAIN_RUN = textwrap.dedent(
    """
    def plain_run(name, x, y, batch_size):
        import keras, keras_lrphase as lrp
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4,)),
                                  keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(3)])
        optimizer = (keras.optimizers.SGD(0.1, momentum=0.9) if name == "sgd"
                     else lrp.LARS(1.0, momentum=0.9))
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0,
                  shuffle=False)
        return {"weights": [w.tolist() for w in model.get_weights()],
                "optimizer": [keras.ops.convert_to_numpy(v).tolist()
                              for v in model.optimizer.variables]}
    """
)

SINGLE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, size=64)
    # Step i of the two processes is rows 8i..8i+7 of each 32-row shard.
    order = np.concatenate([np.r_[8 * i:8 * i + 8, 32 + 8 * i:32 + 8 * i + 8]
                            for i in range(4)])
    exec(PLAIN_RUN)
    print(json.dumps({name: plain_run(name, x[order], y[order], 16)
                      for name in ("sgd", "lars")}))
    """
).replace("exec(PLAIN_RUN)", PLAIN_RUN)


WORKER = WORKER_TEMPLATE.replace("exec(PLAIN_RUN)", PLAIN_RUN)


@pytest.mark.slow  # the main job of .ci/run runs it
def test_two_processes_decide_alike(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    port = str(free_ports()[0])
    run_together([[sys.executable, str(script), str(rank), port, str(tmp_path)]
                  for rank in (0, 1)], env)
    rank0, rank1 = (
        json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)
    )
    assert "jax.distributed.is_initialized()=False" in rank0["uninitialised"]
    assert rank0["reducer"] == rank1["reducer"] == "JaxProcessReducer"
    assert (rank0["chief"], rank1["chief"]) == (True, False)
    # Identical training and decisions: the plateau at epoch 2, the switch
    # at 3, decays where the averaged eigenvalue and the loss rose.
    for a, b in zip(rank0["weights"], rank1["weights"]):
        np.testing.assert_array_equal(a, b)
    assert rank0["lr"] == rank1["lr"]
    assert rank0["phase"] == rank1["phase"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert min(rank0["lr"]) < max(rank0["lr"])  # at least one decay
    # Each process estimates on its own shard: the raw eigenvalues differ;
    # both log their mean.
    raw0, raw1 = np.array(rank0["raw"]), np.array(rank1["raw"])
    assert np.all(np.abs(raw0 - raw1) > 1e-3 * np.abs(raw0))
    np.testing.assert_array_equal(rank0["eigenvalue"], rank1["eigenvalue"])
    np.testing.assert_allclose(rank0["eigenvalue"], (raw0 + raw1) / 2,
                               rtol=1e-12)
    # SGD and LARS on two processes (weights and optimizer state) equal one
    # process on the concatenated batches (float tolerance), and the two
    # processes are identical.
    single = subprocess.run(
        [sys.executable, "-c", SINGLE], env=env, capture_output=True,
        text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    single = json.loads(single.stdout.strip().splitlines()[-1])
    for name in ("sgd", "lars"):
        for key in ("weights", "optimizer"):
            assert len(rank0["plain"][name][key]) == len(single[name][key])
            for a, b, c in zip(rank0["plain"][name][key],
                               rank1["plain"][name][key], single[name][key]):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    # Interrupted at epoch 5 and resumed on both processes: the decisions
    # and weights of the uninterrupted run, identical on both.
    assert rank0["resumed"] == rank1["resumed"]
    resumed = np.array(rank0["resumed"]["rows"])
    assert resumed[:, 0].tolist() == rank0["lr"]
    assert resumed[:, 1].tolist() == rank0["phase"]
    np.testing.assert_allclose(resumed[:, 2], rank0["eigenvalue"], rtol=1e-6)
    for a, b in zip(rank0["resumed"]["weights"], rank0["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Only process 0 writes the state file.
    assert (tmp_path / "state0.json").exists()
    assert not (tmp_path / "state1.json").exists()


def test_reducer_outside_a_jax_run():
    from keras_lrphase.distributed import default_reducer
    from keras_lrphase.distributed.jax_process import JaxProcessReducer
    from keras_lrphase.distributed.reduction import LocalReducer

    assert isinstance(default_reducer(), LocalReducer)
    if keras.backend.backend() == "jax":
        expected = "jax.distributed.is_initialized()=False"
    else:
        expected = f"KERAS_BACKEND={keras.backend.backend()!r}"
    with pytest.raises(RuntimeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        JaxProcessReducer()
