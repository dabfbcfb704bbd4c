"""The Horovod bridge: without Horovod here, and two ranks under `horovodrun`.

The first tests run anywhere (the bridge must import, save and load, and
fail clearly without Horovod; a stand-in `horovod.tensorflow` module checks
the wiring). The tests marked `horovod` launch
`horovodrun -np 2 -H localhost:2 --gloo` on tests/horovod_worker.py once
and check its scenarios; they are skipped where Horovod is not installed
(CI runs them in its Horovod job).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest

from keras_lrphase.distributed import default_reducer
from keras_lrphase.distributed import horovod as lrp_hvd
from keras_lrphase.distributed.reduction import LocalReducer

HERE = os.path.dirname(os.path.abspath(__file__))
HOROVOD_INSTALLED = importlib.util.find_spec("horovod") is not None


# -- without Horovod ----------------------------------------------------------
def test_importing_the_bridge_does_not_import_horovod():
    code = (
        "import sys, keras_lrphase.distributed.horovod\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'horovod'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(HOROVOD_INSTALLED, reason="Horovod is installed here")
def test_using_the_bridge_without_horovod_names_the_package():
    with pytest.raises(ImportError, match="needs the package `horovod`.*"
                       "HOROVOD_WITH_TENSORFLOW=1"):
        lrp_hvd.HorovodReducer()
    with pytest.raises(ImportError, match="BroadcastGlobalVariablesCallback "
                       "needs the package `horovod`"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(lrp_hvd.DistributedOptimizer(keras.optimizers.SGD()), "mse")
        model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0,
                  callbacks=[lrp_hvd.BroadcastGlobalVariablesCallback()])


@pytest.mark.skipif(not HOROVOD_INSTALLED, reason="Horovod is not installed")
def test_using_the_bridge_before_hvd_init_is_an_error():
    with pytest.raises(RuntimeError, match=r"is_initialized\(\)=False"):
        lrp_hvd.HorovodReducer()


def test_wrapping_a_non_optimizer_is_a_type_error():
    with pytest.raises(TypeError, match="Argument `optimizer` must be a "
                       "keras.optimizers.Optimizer instance. Received: "
                       "optimizer='sgd'"):
        lrp_hvd.DistributedOptimizer("sgd")
    inner = lrp_hvd.DistributedOptimizer(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="already a DistributedOptimizer"):
        lrp_hvd.DistributedOptimizer(inner)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="Received: root_rank=-1"):
        lrp_hvd.BroadcastGlobalVariablesCallback(-1)
    with pytest.raises(ValueError, match="Received: verbose=1.5"):
        lrp_hvd.verbose_on_rank_zero(1.5)


def test_default_reducer_is_local_without_a_horovod_job():
    assert isinstance(default_reducer(), LocalReducer)


def test_the_wrapper_delegates_to_the_wrapped_optimizer():
    import keras_lrphase as lrp

    inner = lrp.LARS(0.5, momentum=0.9)
    optimizer = lrp_hvd.DistributedOptimizer(inner)
    assert optimizer.inner_optimizer is inner
    optimizer.learning_rate = 0.25
    assert float(inner.learning_rate) == 0.25
    w = keras.Variable(np.ones((2, 2), "float32"))
    optimizer.build([w])
    assert optimizer.variables == inner.variables
    assert optimizer.iterations is inner.iterations


def test_a_saved_model_loads_in_a_fresh_process(tmp_path):
    import keras_lrphase as lrp

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(lrp_hvd.DistributedOptimizer(
        lrp.LARSWrapper(keras.optimizers.SGD(0.3, momentum=0.9))), "mse")
    model.optimizer.build(model.trainable_variables)
    for v in model.optimizer.variables:
        if "momentum" in v.path:
            v.assign(np.full(v.shape, 0.5, "float32"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    code = textwrap.dedent(f"""
        import keras, numpy as np
        import keras_lrphase.distributed.horovod
        model = keras.models.load_model({path!r})
        opt = model.optimizer
        print(type(opt).__name__, type(opt.inner_optimizer).__name__,
              type(opt.inner_optimizer.inner_optimizer).__name__,
              round(float(opt.learning_rate), 4),
              sorted({{float(np.max(v)) for v in opt.variables
                       if "momentum" in v.path}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.split("\n")[-2]
    assert out == "DistributedOptimizer LARSWrapper SGD 0.3 [0.5]"


def test_a_state_saved_by_another_world_size_is_refused(tmp_path):
    import keras_lrphase as lrp

    path = tmp_path / "state.json"
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    y = x[:, :1]

    def fit(epochs, initial_epoch=0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        callback = lrp.AutoDecay(window=2, state_path=str(path))
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
                  initial_epoch=initial_epoch, callbacks=[callback])

    fit(3)
    content = json.loads(path.read_text())
    assert [s["world_size"] for s in content["states"]] == [1, 1]
    fit(4, initial_epoch=3)  # the same world size resumes
    for state in content["states"]:
        state["world_size"] = 2
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"saved by a run of 2 workers, but "
                       r"this run has 1 \(world_size=1\)"):
        fit(4, initial_epoch=3)


# -- a stand-in horovod.tensorflow: the wiring, in one process ----------------
@pytest.fixture
def fake_horovod(monkeypatch):
    import tensorflow as tf

    hvd = types.ModuleType("horovod.tensorflow")
    hvd.Average = "average"
    hvd.calls = []
    hvd.state = {"size": 2, "rank": 1}
    hvd.is_initialized = lambda: True
    hvd.size = lambda: hvd.state["size"]
    hvd.rank = lambda: hvd.state["rank"]

    def allgather(tensor, name=None):
        hvd.calls.append(("allgather", name))
        return tf.concat([tensor, tensor + 1.0], axis=0)  # the other rank: +1

    def grouped_allreduce(tensors, op=None, name=None, ignore_name_scope=False):
        hvd.calls.append(("grouped_allreduce", op, len(tensors), name))
        return [t * 2.0 for t in tensors]

    hvd.allgather = allgather
    hvd.grouped_allreduce = grouped_allreduce
    package = types.ModuleType("horovod")
    package.tensorflow = hvd
    monkeypatch.setitem(sys.modules, "horovod", package)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", hvd)
    return hvd


def test_default_reducer_picks_horovod_in_a_job_of_two(fake_horovod):
    reducer = default_reducer()
    assert type(reducer).__name__ == "HorovodReducer"
    assert (reducer.is_chief, reducer.world_size) == (False, 2)
    assert reducer.reduce_mean({"loss": 0.25, "h": 3.0}) == {
        "loss": 0.75, "h": 3.5}
    fake_horovod.state["size"] = 1
    assert isinstance(default_reducer(), LocalReducer)


def test_rank_zero_helpers(fake_horovod):
    callback = keras.callbacks.History()
    assert lrp_hvd.rank_zero_only([callback]) == []
    assert lrp_hvd.verbose_on_rank_zero(2) == 0
    fake_horovod.state["rank"] = 0
    assert lrp_hvd.rank_zero_only([callback]) == [callback]
    assert lrp_hvd.verbose_on_rank_zero(2) == 2


def test_the_allreduce_runs_in_the_compiled_step_before_the_update(fake_horovod):
    # The stand-in all-reduce doubles the gradients: one SGD step then
    # equals a step at twice the learning rate, under accumulation too.
    x = np.arange(8, dtype="float32").reshape(4, 2) / 8
    y = x.sum(axis=1, keepdims=True)

    def trained(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer, "mse")
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()

    for kwargs in ({}, {"gradient_accumulation_steps": 2}):
        got = trained(lrp_hvd.DistributedOptimizer(
            keras.optimizers.SGD(0.1, **kwargs)))
        want = trained(keras.optimizers.SGD(0.2, **kwargs))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # Named by position, not by the (rank-dependent) layer names.
    assert ("grouped_allreduce", "average", 2,
            "keras_lrphase_gradients_0") in fake_horovod.calls


def test_metric_average_callback_averages_numeric_logs(fake_horovod):
    callback = lrp_hvd.MetricAverageCallback()
    logs = {"loss": 0.5, "accuracy": 0.25, "note": "text"}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0, "accuracy": 0.75, "note": "text"}


# -- two ranks under horovodrun ------------------------------------------------
def _horovodrun():
    local = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    return local if os.path.exists(local) else shutil.which("horovodrun")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    runner = _horovodrun()
    if runner is None:
        pytest.skip("`horovodrun` is not on PATH (Horovod is not installed)")
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError as error:
        pytest.skip(f"horovod.tensorflow cannot be imported here: {error}")
    out = tmp_path_factory.mktemp("horovod")
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [runner, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
         os.path.join(HERE, "horovod_worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, ranks


def _equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def _close(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.horovod
@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["sgd", "lars", "lars_wrapper", "sgd_accumulated_clipped"])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(job, name):
    _, (rank0, rank1) = job
    got0, got1 = rank0["average"][name], rank1["average"][name]
    _equal(got0["weights"], got1["weights"])
    _equal(got0["optimizer"], got1["optimizer"])
    _close(got0["weights"], got0["reference_weights"])
    _close(got0["optimizer"], got0["reference_optimizer"])


@pytest.mark.horovod
@pytest.mark.slow
def test_a_model_trained_under_horovod_loads_without_it(job):
    out, (rank0, _) = job
    code = textwrap.dedent(f"""
        import keras
        import keras_lrphase.distributed.horovod
        model = keras.models.load_model({str(out / "lars.keras")!r})
        print(type(model.optimizer.inner_optimizer).__name__)
        print([w.tolist() for w in model.get_weights()])
    """)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, check=True, env=env).stdout.split("\n")
    assert lines[-3] == "LARS"
    _close(json.loads(lines[-2]), rank0["average"]["lars"]["weights"], 0, 0)


@pytest.mark.horovod
@pytest.mark.slow
def test_rank_one_starts_from_rank_zeros_variables(job):
    _, (rank0, rank1) = job
    before0, before1 = rank0["broadcast"]["before"], rank1["broadcast"]["before"]
    assert not np.allclose(before0[0], before1[0])
    _equal(rank1["broadcast"]["after"], before0)
    _equal(rank0["broadcast"]["after"], before0)
    assert rank1["broadcast"]["learning_rate"] == pytest.approx(0.1)
    _equal(rank0["broadcast"]["final"], rank1["broadcast"]["final"])


@pytest.mark.horovod
@pytest.mark.slow
def test_epoch_logs_are_averaged_over_the_ranks(job):
    _, (rank0, rank1) = job
    own0, own1 = rank0["metric_average"]["own"], rank1["metric_average"]["own"]
    assert own0 != own1
    averaged = rank0["metric_average"]["averaged"]
    assert averaged == rank1["metric_average"]["averaged"]
    np.testing.assert_allclose(averaged, (np.array(own0) + own1) / 2,
                               rtol=1e-12)


@pytest.mark.horovod
@pytest.mark.slow
def test_ranks_with_different_eigenvalues_decide_alike(job):
    out, (rank0, rank1) = job
    assert rank0["reducer_before_init"] == "LocalReducer"
    assert "is_initialized()=False" in rank0["uninitialised"]
    assert rank0["reducer"] == rank1["reducer"] == "HorovodReducer"
    run0, run1 = rank0["decisions"], rank1["decisions"]
    assert run0["reducer"] == run1["reducer"] == "HorovodReducer"
    assert (run0["chief"], run1["chief"]) == (True, False)
    _equal(run0["weights"], run1["weights"])
    _equal(run0["optimizer"], run1["optimizer"])
    assert run0["lr"] == run1["lr"]
    # The plateau at epoch 2, the switch at 3, decays where the averaged
    # eigenvalue and the loss rose.
    assert run0["phase"] == run1["phase"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert min(run0["lr"]) < max(run0["lr"])
    raw0, raw1 = np.array(run0["raw"]), np.array(run1["raw"])
    assert np.all(np.abs(raw0 - raw1) > 1e-3 * np.abs(raw0))
    assert run0["eigenvalue"] == run1["eigenvalue"]
    np.testing.assert_allclose(run0["eigenvalue"], (raw0 + raw1) / 2,
                               rtol=1e-12)
    # Only rank 0 writes the state file; it records the world size.
    assert not (out / "decisions_state1.json").exists()
    state = json.loads((out / "decisions_state0.json").read_text())
    assert {s["world_size"] for s in state["states"]} == {2}


@pytest.mark.horovod
@pytest.mark.slow
def test_an_interrupted_run_resumed_on_two_ranks_repeats_the_decisions(job):
    _, (rank0, rank1) = job
    for rank in (rank0, rank1):
        resumed, whole = rank["resume"], rank["decisions"]
        assert resumed["epochs"] == list(range(8))
        assert resumed["lr"] == whole["lr"]
        assert resumed["phase"] == whole["phase"]
        np.testing.assert_allclose(resumed["eigenvalue"], whole["eigenvalue"],
                                   rtol=1e-6)
        _close(resumed["weights"], whole["weights"])
    _equal(rank0["resume"]["weights"], rank1["resume"]["weights"])


# -- the distributed guide's example and the CLI under horovodrun ------------
def _horovod_command(command, timeout=600):
    runner = _horovodrun()
    if runner is None:
        pytest.skip("`horovodrun` is not on PATH (Horovod is not installed)")
    pytest.importorskip("horovod.tensorflow")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [runner, "-np", "2", "-H", "localhost:2", "--gloo", *command],
        env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done.stdout


@pytest.mark.horovod
@pytest.mark.slow
def test_the_distributed_guide_example_under_horovodrun(tmp_path):
    from test_distributed_runs import EXAMPLE
    from test_distributed_runs import _check_example_ranks

    _horovod_command([sys.executable, EXAMPLE, "horovod", str(tmp_path)])
    result = _check_example_ranks(tmp_path, "horovod", 2, "HorovodReducer")
    assert result["workers"] == 2


@pytest.mark.horovod
@pytest.mark.slow
def test_the_cli_under_horovodrun(tmp_path):
    out = tmp_path / "run"
    stdout = _horovod_command(
        [sys.executable, "-m", "keras_lrphase", "train", "--distributed",
         "horovod", "--schedule", "two-phase", "--warmup-epochs", "1",
         "--lars", "0.01", "--lr", "2", "--epochs", "10", "--batch-size",
         "128", "--train-size", "1024", "--test-size", "256",
         "--hessian-batch-size", "512", "--plateau-patience", "1",
         "--min-delta", "0.2", "--verbose", "0", "--out", str(out)])
    assert stdout.count("images/s across 2 workers") == 1  # rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == {"engine": "horovod", "size": 2,
                                  "batch_per_worker": 64}
    assert summary["exploration_epochs"] is not None  # the switch happened
    assert sorted(os.listdir(out / "workers" / "rank1")) == ["history.csv"]
    rows = [(out / "history.csv").read_text().splitlines(),
            (out / "workers" / "rank1" / "history.csv").read_text().splitlines()]
    header = rows[0][0].split(",")
    keep = [header.index(c) for c in ("loss", "learning_rate", "phase",
                                      "hessian_max_eigenvalue", "val_accuracy")]
    for row0, row1 in zip(rows[0][1:], rows[1][1:]):
        cells0, cells1 = row0.split(","), row1.split(",")
        assert [cells0[i] for i in keep] == [cells1[i] for i in keep]
