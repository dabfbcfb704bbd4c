"""The Heuristics presets: warmup/freeze snapshots and distillation, with SVCCA."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from keras_lrphase import presets
from keras_lrphase.cli import main
from keras_lrphase.presets import PresetRun
from keras_lrphase.presets import get_preset
from keras_lrphase.training import teacher_runs
from keras_lrphase.training.run_config import RunConfig

pytestmark = pytest.mark.backend_neutral

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


# -- the presets ---------------------------------------------------------------
def test_warmup_preset_rows_mirror_the_paper_at_cpu_scale():
    preset = get_preset("heuristics-warmup-cpu")
    table = {run.label: c.resolved() for run, c in preset.configs(data_dir="/d")}
    assert list(table) == ["LB + warmup", "LB no warmup", "LB + FC freeze",
                           "SB no warmup"]
    for config in table.values():
        config.validate(check_data=False)
        assert (config.model, config.epochs, config.train_size) == (
            "vgg-small", 30, 5000)
        assert config.snapshot_epochs == (0, 10)
        assert config.decay_epochs == () and config.hessian_every == 0
    assert [(c.batch_size, c.lr, c.warmup_epochs, c.freeze_epochs)
            for c in table.values()] == [(500, 0.1, 10, 0), (500, 0.1, 0, 0),
                                         (500, 0.1, 0, 10), (50, 0.01, 0, 0)]
    # --epochs scales warmup, freeze and the warmup-end snapshot alike.
    short = {run.label: c for run, c in preset.configs(epochs=6, data_dir="/d")}
    assert short["LB + warmup"].warmup_epochs == 2
    assert short["LB + FC freeze"].freeze_epochs == 2
    assert short["SB no warmup"].snapshot_epochs == (0, 2)
    one = {run.label: c for run, c in preset.configs(epochs=1, data_dir="/d")}
    assert one["LB + FC freeze"].freeze_epochs == 0
    assert one["LB + warmup"].snapshot_epochs == (0, 1)
    for config in one.values():
        config.resolved().validate(check_data=False)


def test_distillation_preset_trains_its_teacher_first():
    preset = get_preset("heuristics-distillation-cpu")
    runs = preset.configs(data_dir="/d")
    assert [(run.label, run.teacher, c.model) for run, c in runs] == [
        ("teacher", None, "vgg-small"), ("distilled", "teacher", "shallow-cnn"),
        ("independent", None, "shallow-cnn")]
    assert all(c.save_model for _, c in runs)
    assert runs[1][0].versus == "independent"
    tasks = [(run, c.resolved(), f"out/{run.label}") for run, c in runs]
    linked, after = teacher_runs.link_teachers(
        tasks, lambda label, seed: f"out/{label}")
    assert linked[1][1].teacher == os.path.join("out/teacher", "model.keras")
    assert (linked[1][1].distill_alpha, linked[1][1].temperature) == (0.0, 5.0)
    assert linked[0][1].teacher is None and linked[2][1].teacher is None
    assert after == {"out/distilled": "out/teacher"}


def test_teacher_links_fail_before_training(tmp_path):
    teacher = PresetRun("T", {})
    student = PresetRun("S", {}, teacher="T")
    where = lambda label, seed: str(tmp_path / label)  # noqa: E731
    with pytest.raises(ValueError, match="Argument `only` leaves out run 'T'"):
        teacher_runs.link_teachers([(student, RunConfig(), "S")], where)
    with pytest.raises(ValueError, match="comes after it"):
        teacher_runs.link_teachers([(student, RunConfig(), "S"),
                                    (teacher, RunConfig(save_model=True), "T")],
                                   where)
    with pytest.raises(ValueError, match="give it save_model=True"):
        teacher_runs.link_teachers([(teacher, RunConfig(), "T"),
                                    (student, RunConfig(), "S")], where)
    # A teacher trained before (its model file exists) may be left out.
    os.makedirs(tmp_path / "T")
    (tmp_path / "T" / "model.keras").write_bytes(b"model")
    linked, after = teacher_runs.link_teachers([(student, RunConfig(), "S")],
                                               where)
    assert linked[0][1].teacher == str(tmp_path / "T" / "model.keras")
    assert after == {}


def test_a_finished_student_is_stale_when_its_teacher_changes(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"first teacher")
    config = RunConfig(teacher=str(path))
    summary = {"teacher": {"sha256": teacher_runs.file_sha256(str(path))}}
    assert not teacher_runs.teacher_changed(config, summary, "T", pending=())
    assert teacher_runs.teacher_changed(config, summary, "T", pending={"T"})
    assert teacher_runs.teacher_changed(config, {}, "T")
    path.write_bytes(b"retrained teacher")
    assert teacher_runs.teacher_changed(config, summary, None)
    assert not teacher_runs.teacher_changed(RunConfig(), {}, None)


def test_parallel_runs_start_a_student_after_its_teacher(monkeypatch):
    import concurrent.futures
    import threading
    import time

    from keras_lrphase.training import compare

    events, lock = [], threading.Lock()

    def fake_run_one(config, folder, prefix, tag, every):
        with lock:
            events.append(("start", folder))
        time.sleep(0.2 if folder == "T" else 0.01)
        with lock:
            events.append(("end", folder))
        return folder, {"decay_epochs": [], "best_val_accuracy": 0.5,
                        "best_epoch": 1, "final_val_accuracy": 0.5,
                        "train_wall_time_s": 0.0}

    class Threads(concurrent.futures.ThreadPoolExecutor):
        # The workers' initializer (they ignore Ctrl-C between runs) sets a
        # process's signal handler: not for threads.
        def __init__(self, max_workers, mp_context=None, initializer=None):
            super().__init__(max_workers)

    monkeypatch.setattr(compare, "_run_one", fake_run_one)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Threads)
    pending = [(PresetRun(f, {}), RunConfig(), f, f"[{i}]", f)
               for i, f in enumerate(("T", "S", "I"))]
    summaries = compare._run_parallel(pending, 3, {"S": "T"})
    assert sorted(summaries) == ["I", "S", "T"]
    assert events.index(("start", "S")) > events.index(("end", "T"))
    assert events.index(("start", "I")) < events.index(("end", "T"))


# -- runs on the digits with a tiny model ----------------------------------------
def _tiny(name, monkeypatch, **common):
    preset = get_preset(name)
    tiny = dataclasses.replace(
        preset, requires_data_dir=False,
        common=dict(preset.common, **dict(
            dict(dataset="digits", model="small-cnn", train_size=None,
                 test_size=None), **common)),
        runs=tuple(dataclasses.replace(run, overrides={
            k: v for k, v in run.overrides.items() if k != "model"})
            for run in preset.runs))
    monkeypatch.setitem(presets.PRESETS, name, tiny)
    return tiny


def _compare(name, out, *extra, epochs=2):
    return main(["compare", "--preset", name, "--epochs", str(epochs),
                 "--pipeline", "numpy", "--verbose", "0", "--out", str(out),
                 *extra])


def test_the_runner_snapshots_the_initial_and_the_warmup_end_weights(
        tmp_path, monkeypatch):
    from keras_lrphase.data import load_dataset
    from keras_lrphase.models import get_model
    from keras_lrphase.training import runner

    after_epoch = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            after_epoch[epoch + 1] = self.model.get_weights()

    build = runner.build_callbacks
    monkeypatch.setattr(runner, "build_callbacks", lambda *a, **k: (
        build(*a, **k)[0] + [Record()], build(*a, **k)[1]))
    config = RunConfig(dataset="digits", epochs=3, batch_size=256,
                       train_size=512, test_size=100, hessian_every=0,
                       warmup_epochs=2, freeze_epochs=1, pipeline="numpy",
                       snapshot_epochs=(0, 2), save_model=True, seed=3)
    summary = runner.run_training(config, str(tmp_path), verbose=0, log=None,
                                  resume=True)
    assert summary["snapshots"] == {"0": "snapshots/epoch0.weights.h5",
                                    "2": "snapshots/epoch2.weights.h5"}
    data = load_dataset("digits")

    def snapshot(epoch):
        model = get_model("small-cnn", data.input_shape, 10)
        model.load_weights(str(tmp_path / "snapshots" / f"epoch{epoch}.weights.h5"))
        return model.get_weights()

    keras.utils.set_random_seed(3)
    initial = get_model("small-cnn", data.input_shape, 10).get_weights()
    for saved, expected in ((snapshot(0), initial), (snapshot(2), after_epoch[2])):
        assert all(np.array_equal(a, b) for a, b in zip(saved, expected))
    final = keras.models.load_model(str(tmp_path / "model.keras"), compile=False)
    assert all(np.array_equal(a, b)
               for a, b in zip(final.get_weights(), after_epoch[3]))
    assert summary["model_file"] == "model.keras"


@pytest.mark.slow  # the main job of .ci/run runs it
def test_warmup_preset_writes_the_heatmaps_of_its_snapshots(tmp_path, monkeypatch):
    from keras_lrphase.analysis import layer_similarity
    from keras_lrphase.data import load_dataset
    from keras_lrphase.training.heuristics_study import analysis_images
    from keras_lrphase.training.heuristics_study import snapshot_model

    preset = _tiny("heuristics-warmup-cpu", monkeypatch)
    # Two epochs: the first is warmup / freeze (10 of 30, scaled).
    assert _compare("heuristics-warmup-cpu", tmp_path, "--only",
                    "LB + warmup,LB + FC freeze") == 0
    files = sorted(os.listdir(tmp_path))
    for label in ("LB-warmup", "LB-FC-freeze"):
        assert _png(tmp_path / f"similarity_{label}.png")
    assert _png(tmp_path / "similarity_layers.png")
    assert {"table.md", "compare.png", "similarity.json",
            "similarity.md"} <= set(files)
    with open(tmp_path / "table.md") as f:
        assert "| LB + warmup | 500 | 0.1 | constant | - |" in f.read()
    with open(tmp_path / "similarity.json") as f:
        record = json.load(f)
    assert record["images"] == 359  # every digits test image (< 1000)
    data = load_dataset("digits")
    images = analysis_images(data)
    config = preset.configs(epochs=2)[2][1]  # LB + FC freeze
    folder = tmp_path / "LB-FC-freeze" / "snapshots"
    first = snapshot_model(config, data, str(folder / "epoch0.weights.h5"))
    last = snapshot_model(config, data, str(folder / "epoch1.weights.h5"))
    layers = ["relu1", "relu2", "logits"]  # after BN and ReLU: study_layers
    direct = layer_similarity(first, last, images, layers_a=layers,
                              layers_b=layers)
    found = record["warmup"]["LB + FC freeze"]
    assert found["epochs"] == [0, 1]
    assert found["layers"] == ["relu1", "relu2", "logits"]
    assert np.array_equal(np.array(found["matrix"]), direct)
    assert found["diagonal"] == np.diag(direct).tolist()
    # The frozen Dense stack (logits) has the initial weights after epoch 1.
    assert np.array_equal(first.get_layer("logits").get_weights()[0],
                          last.get_layer("logits").get_weights()[0])
    from keras_lrphase.training.epoch_recorder import EpochRecorder

    rows = EpochRecorder.read(str(tmp_path / "LB-FC-freeze" / "history.csv"))
    assert found["val_accuracy"] == rows[0]["val_accuracy"]  # after epoch 1
    with open(tmp_path / "similarity.md") as f:
        assert ("LB + FC freeze: validation accuracy after epoch 1 "
                f"{100 * found['val_accuracy']:.2f}%; SVCCA of each layer at "
                "epoch 0 and after epoch 1: relu1 ") in f.read()


def _tiny_distillation(tmp_path, monkeypatch):
    _tiny("heuristics-distillation-cpu", monkeypatch, batch_size=256,
          train_size=512, test_size=200)
    return lambda *extra: _compare(  # noqa: E731
        "heuristics-distillation-cpu", tmp_path, *extra, epochs=1)


def test_a_student_without_its_teacher_fails_before_training(
        tmp_path, monkeypatch, capsys):
    compare = _tiny_distillation(tmp_path, monkeypatch)
    assert compare("--only", "distilled,independent") == 2
    error = capsys.readouterr().err
    assert ("error: Argument --only leaves out run 'teacher', the teacher of "
            "'distilled', which has not been run") in error
    assert error.rstrip().endswith("Received: --only='distilled,independent'")
    assert not os.path.exists(tmp_path / "independent")


@pytest.mark.slow  # the main job of .ci/run runs it
def test_distillation_preset_writes_figure_6(tmp_path, monkeypatch):
    from keras_lrphase.analysis import layer_similarity
    from keras_lrphase.data import load_dataset
    from keras_lrphase.training.heuristics_study import analysis_images

    assert _tiny_distillation(tmp_path, monkeypatch)() == 0
    for key in ("distilled", "independent", "difference"):
        assert _png(tmp_path / f"similarity_{key}.png")
    with open(tmp_path / "distilled" / "summary.json") as f:
        student = json.load(f)
    teacher_file = str(tmp_path / "teacher" / "model.keras")
    assert student["config"]["teacher"] == teacher_file
    assert student["teacher"]["sha256"] == teacher_runs.file_sha256(teacher_file)
    with open(tmp_path / "similarity.json") as f:
        found = json.load(f)["distillation"]["distilled"]
    load = lambda run: keras.models.load_model(  # noqa: E731
        str(tmp_path / run / "model.keras"), compile=False)
    images = analysis_images(load_dataset("digits").subset(512, 200, seed=0))
    teacher = load("teacher")
    layers = dict(layers_a=["relu1", "relu2", "logits"],
                  layers_b=["relu1", "relu2", "logits"])
    assert (found["teacher_layers"], found["student_layers"]) == (
        layers["layers_a"], layers["layers_b"])
    distilled = layer_similarity(teacher, load("distilled"), images, **layers)
    independent = layer_similarity(teacher, load("independent"), images,
                                   **layers)
    assert np.array_equal(np.array(found["distilled"]), distilled)
    assert np.array_equal(np.array(found["independent"]), independent)
    assert np.array_equal(np.array(found["difference"]),
                          np.abs(distilled - independent))
    assert found["difference_by_student_layer"] == np.abs(
        distilled - independent).mean(axis=0).tolist()


@pytest.mark.slow
def test_distillation_preset_keeps_its_teacher_first_with_jobs_and_resume(
        tmp_path, monkeypatch, capsys):
    compare = _tiny_distillation(tmp_path, monkeypatch)
    assert compare() == 0
    capsys.readouterr()
    # Called again: nothing trains. With the teacher to train again, its
    # student trains again too, after it (--jobs 2: spawned processes,
    # given the resolved configurations); the independent student does not.
    assert compare("--jobs", "2") == 0
    assert capsys.readouterr().out.count("done before") == 3
    os.remove(tmp_path / "teacher" / "summary.json")
    assert compare("--jobs", "2") == 0
    out = capsys.readouterr().out
    assert out.count("done before") == 1 and "independent: done before" in out
    with open(tmp_path / "distilled" / "summary.json") as f:
        student = json.load(f)
    assert student["teacher"]["sha256"] == teacher_runs.file_sha256(
        str(tmp_path / "teacher" / "model.keras"))
    # The student alone, its teacher done before: it is linked, not retrained.
    assert compare("--only", "distilled") == 0
    assert "distilled: done before" in capsys.readouterr().out


# -- the options ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(freeze_epochs=-1), "Argument `freeze_epochs` must be an integer >= 0. "
                             "Received: freeze_epochs=-1"),
    (dict(freeze_epochs=31), "freeze_epochs=31, epochs=30"),
    (dict(snapshot_epochs=(3, 1)), "Argument `snapshot_epochs` must be "
                                   "increasing integers in [0, 30]. Received: "
                                   "snapshot_epochs='3,1'"),
    (dict(snapshot_epochs=(0, 31)), "snapshot_epochs='0,31'"),
    (dict(snapshot_epochs=()), "snapshot_epochs=''"),
    (dict(snapshot_epochs=5), "snapshot_epochs=5"),
    (dict(save_model=1), "save_model=1"),
])
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(ValueError) as info:
        RunConfig(**kwargs).validate()
    assert message in str(info.value)


def test_the_train_command_takes_the_options(tmp_path, capsys):
    def run(*flags):
        try:
            return main(["train", "--epochs", "2", "--batch-size", "256",
                         "--train-size", "512", "--test-size", "100",
                         "--hessian-every", "0", "--pipeline", "numpy",
                         "--verbose", "0", "--out", str(tmp_path), *flags])
        except SystemExit as exit:
            return exit.code

    assert run("--snapshot-epochs", "2,1") == 2
    assert ("error: Argument --snapshot-epochs must be increasing integers in "
            "[0, 2]. Received: --snapshot-epochs='2,1'") in capsys.readouterr().err
    assert run("--freeze-epochs", "1", "--snapshot-epochs", "0,1",
               "--save-model") == 0
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    assert (summary["config"]["freeze_epochs"], summary["config"]["save_model"],
            summary["config"]["snapshot_epochs"]) == (1, True, [0, 1])
    assert sorted(os.listdir(tmp_path / "snapshots")) == [
        "epoch0.weights.h5", "epoch1.weights.h5"]
    assert os.path.isfile(tmp_path / "model.keras")
    # Left out at their defaults: old summaries still match their runs.
    assert "freeze_epochs" not in RunConfig().to_dict()
