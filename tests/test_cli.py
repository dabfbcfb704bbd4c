import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_lrphase.cli import main
from keras_lrphase.training.epoch_recorder import COLUMNS

pytestmark = pytest.mark.backend_neutral

SUMMARY_KEYS = {
    "config", "backend", "dataset", "model_parameters", "optimizer",
    "steps_per_epoch", "hessian_batch_size", "epochs_completed", "diverged",
    "best_val_accuracy", "best_epoch", "final_val_accuracy", "final_loss",
    "final_learning_rate", "decay_epochs", "plateau_epoch",
    "exploration_epochs", "images_per_second", "train_wall_time_s",
    "wall_time_s", "stop_epoch", "stage_checkpoints",
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """3 classes of 8x8 RGB PNGs: 8 train and 3 test images per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 3)):
        for label, name in enumerate(("a", "b", "c")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 60, (8, 8, 3)).astype("uint8")
                image[..., label] += 150  # a learnable colour cue
                Image.fromarray(image).save(folder / f"{i}.png")
    return str(root)


def _read_history(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def _train(image_dir, tmp_path, *extra):
    out = str(tmp_path / "run")
    argv = ["train", "--dataset", "folder", "--data-dir", image_dir,
            "--cache-dir", str(tmp_path / "cache"), "--model", "small-cnn",
            "--verbose", "0", "--out", out, *extra]
    assert main(argv) == 0
    return out


def test_train_two_phase_writes_history_summary_and_curves(image_dir, tmp_path, capsys):
    out = _train(image_dir, tmp_path, "--batch-size", "8", "--accumulate", "2",
                 "--epochs", "3", "--warmup-epochs", "1", "--lr", "0.1",
                 "--schedule", "two-phase", "--plateau-patience", "1",
                 "--hessian-batch-size", "16")
    assert sorted(os.listdir(out)) == ["curves.png", "history.csv", "summary.json"]
    header, rows = _read_history(os.path.join(out, "history.csv"))
    assert tuple(header) == COLUMNS
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # 24 images / batch 8 = 3 steps = 6 micro-steps per epoch; the ramp
    # starts at 1/6 and the last step of epoch 1 is micro-step 5:
    # 0.1 * (1/6 + 5/6 * 5/6).
    np.testing.assert_allclose(float(rows[0]["learning_rate"]),
                               0.1 * (1 / 6 + 25 / 36), rtol=1e-6)
    assert rows[0]["phase"] == "warmup"
    assert {r["phase"] for r in rows[1:]} <= {"exploration", "convergence"}
    for row in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy",
                    "epoch_time", "train_time", "validation_time"):
            assert np.isfinite(float(row[key])), key
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0
        assert (float(row["train_time"]) + float(row["validation_time"])
                <= float(row["epoch_time"]))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert set(summary) == SUMMARY_KEYS
    assert summary["steps_per_epoch"] == 3 and summary["epochs_completed"] == 3
    assert summary["config"]["schedule"] == "two-phase"
    assert summary["config"]["decay_factor"] == 0.5  # the two-phase default
    assert summary["config"]["accumulate"] == 2
    assert summary["dataset"]["train_examples"] == 24
    assert summary["dataset"]["test_examples"] == 9
    assert summary["hessian_batch_size"] == 16
    assert summary["best_val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)
    assert summary["final_val_accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "best val accuracy" in capsys.readouterr().out


def test_train_step_decay_converts_epochs_to_micro_steps(image_dir, tmp_path):
    out = _train(image_dir, tmp_path, "--batch-size", "12", "--accumulate", "3",
                 "--epochs", "4", "--lr", "0.2", "--schedule", "step",
                 "--decay-epochs", "2,3", "--decay-factor", "0.5",
                 "--hessian-every", "2", "--lars", "0.01")
    _, rows = _read_history(os.path.join(out, "history.csv"))
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [0.2, 0.2, 0.1, 0.05], rtol=1e-6)
    assert [r["phase"] for r in rows] == ["exploration", "exploration",
                                          "convergence", "convergence"]
    # The eigenvalue is logged every second epoch only.
    assert [r["hessian_max_eigenvalue"] == "" for r in rows] == [True, False, True, False]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["decay_epochs"] == [2, 3] and summary["optimizer"] == "LARS"
    assert summary["steps_per_epoch"] == 2


def test_train_cosine_decay_with_warmup_finishes_and_follows_keras_schedule(
        image_dir, tmp_path):
    # 24 images in batches of 12: 2 steps per epoch; 1 warmup epoch, then
    # the cosine over the remaining 3 epochs (6 steps).
    out = _train(image_dir, tmp_path, "--batch-size", "12", "--epochs", "4",
                 "--warmup-epochs", "1", "--lr", "0.2", "--schedule", "cosine",
                 "--hessian-every", "0")
    _, rows = _read_history(os.path.join(out, "history.csv"))
    # The rate of each epoch's last step (1, 3, 5, 7), from Keras'
    # CosineDecay formula: a linear warmup from 0.2 / 2 to 0.2 over steps
    # 0-1, then 0.2 * (1 + cos(pi * (step - 2) / 6)) / 2.
    expected = [0.1 + 0.1 * 1 / 2] + [
        0.2 * 0.5 * (1 + np.cos(np.pi * (step - 2) / 6)) for step in (3, 5, 7)]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               expected, rtol=1e-5)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["epochs_completed"] == 4
    assert os.path.exists(os.path.join(out, "curves.png"))


def test_train_autodecay_with_stage_checkpoints_and_momentum_correction(
        image_dir, tmp_path):
    stages = tmp_path / "stages"
    out = _train(image_dir, tmp_path, "--batch-size", "8", "--epochs", "30",
                 "--lr", "0.05", "--schedule", "autodecay",
                 "--autodecay-window", "2", "--autodecay-tolerance", "0.5",
                 "--autodecay-drop-threshold", "0.9", "--momentum-correction",
                 "--stage-checkpoints", str(stages), "--hessian-every", "0")
    _, rows = _read_history(os.path.join(out, "history.csv"))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    # Window 2 within 50%: every stage is stable at its second epoch; the
    # first drops below 90% of its first value (decay), the run stops when
    # one does not.
    assert summary["config"]["momentum_correction"] is True
    assert summary["decay_epochs"] and summary["stop_epoch"] == len(rows)
    assert not summary["diverged"]
    assert [r["phase"] for r in rows][:2] == ["stage 1", "stage 1"]
    assert all(r["autodecay_smoothed_loss"] != "" for r in rows)
    records = summary["stage_checkpoints"]
    assert len(records) == len(summary["decay_epochs"]) + 1
    assert [r["last_epoch"] for r in records[:-1]] == summary["decay_epochs"]
    assert sorted(os.listdir(stages))[:2] == ["stage1.json", "stage1.keras"]
    lr = [float(r["learning_rate"]) for r in rows]
    assert lr[summary["decay_epochs"][0]] == pytest.approx(0.005, rel=1e-6)


def test_autodecay_options_need_the_autodecay_schedule(capsys):
    assert main(["train", "--schedule", "step", "--autodecay-window", "3"]) == 2
    assert ("Argument --autodecay-window is only used by --schedule autodecay"
            in capsys.readouterr().err)


def test_compare_demo_quick(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["compare", "--preset", "demo", "--epochs", "2", "--out", out,
                 "--only", "large-batch,two-phase", "--seeds", "1",
                 "--verbose", "0"]) == 0
    assert sorted(os.listdir(out)) == ["compare.png", "large-batch", "results.json",
                                       "table.md", "two-phase"]
    lines = capsys.readouterr().out.splitlines()
    assert [l.split(":")[0] for l in lines if "best val accuracy" in l] == [
        "[1/2] large-batch", "[2/2] two-phase"]
    table = pathlib.Path(os.path.join(out, "table.md")).read_text().splitlines()
    rows = [l for l in table if l.startswith("| ") and "---" not in l]
    assert rows[0].startswith("| configuration | batch | LR |")
    assert "paper" not in rows[0]
    assert rows[1].startswith("| large-batch | 512 | 0.8 | step-wise (beta = 0.1) | 1 |")
    assert rows[2].startswith("| two-phase | 512 | 0.8 | adaptive (beta = 0.5) |")
    results = json.loads(pathlib.Path(os.path.join(out, "results.json")).read_text())
    assert set(results) == {"large-batch", "two-phase"}
    (large,) = results["large-batch"]["runs"]
    assert large["config"]["epochs"] == 2
    assert large["config"]["warmup_epochs"] == 0  # 5 * 2/100
    assert all("+-" not in r for r in rows)
    assert ("- two-phase vs large-batch: one seed per row, so no seed spread "
            "to compare with (run with --seeds 2 or more).") in table
    for label in results:
        assert os.path.exists(os.path.join(out, label, "curves.png"))


def test_compare_with_seeds_reports_mean_and_std(tmp_path, capsys):
    out = str(tmp_path / "seeds")
    assert main(["compare", "--preset", "demo", "--epochs", "1", "--out", out,
                 "--only", "large-batch,two-phase", "--seeds", "2",
                 "--verbose", "0"]) == 0
    assert sorted(os.listdir(os.path.join(out, "large-batch"))) == ["seed0", "seed1"]
    results = json.loads(pathlib.Path(os.path.join(out, "results.json")).read_text())
    runs = results["large-batch"]["runs"]
    assert [r["config"]["seed"] for r in runs] == [0, 1]
    finals = [100 * r["final_val_accuracy"] for r in runs]
    mean, std = np.mean(finals), np.std(finals, ddof=1)
    table = pathlib.Path(os.path.join(out, "table.md")).read_text()
    row = [l for l in table.splitlines() if l.startswith("| large-batch")][0]
    assert f"| {mean:.2f} +- {std:.2f}% | - |" in row  # the reference row
    # Welch's test of two-phase's final accuracies against large-batch's.
    from keras_lrphase.training.statistics import welch_t_test
    other = [r["final_val_accuracy"] for r in results["two-phase"]["runs"]]
    _, _, p = welch_t_test(other, [f / 100 for f in finals])
    row = [l for l in table.splitlines() if l.startswith("| two-phase")][0]
    expected = "-" if np.isnan(p) else f"{p:.3g} vs large-batch"
    assert f"| {expected} |" in row
    assert "p (Welch, final)" in table and "two-sided Welch t-test" in table
    # One plain sentence on what the seeds show, in the table and printed.
    from keras_lrphase.training.statistics import seed_difference
    _, sentence = seed_difference("two-phase", other, "large-batch",
                                  [f / 100 for f in finals])
    assert f"- {sentence}" in table.splitlines()
    printed = capsys.readouterr().out
    assert "(seed 1)" in printed
    assert f"What the seeds show (final validation accuracy):\n  {sentence}" in printed


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "mnist"], "Argument --dataset must be one of"),
    (["train", "--model", "vgg16"], "--model='vgg16'"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/dir"],
     "--data-dir='/nonexistent/dir'"),
    (["train", "--batch-size", "100", "--accumulate", "3"],
     "--batch-size must be divisible by --accumulate. Received: "
     "--batch-size=100, --accumulate=3"),
    (["train", "--epochs", "3", "--warmup-epochs", "5"],
     "--epochs=3, --warmup-epochs=5"),
    (["train", "--decay-epochs", "20,10", "--epochs", "30"], "--decay-epochs='20,10'"),
    (["train", "--decay-epochs", "a,b"], "expected comma-separated integers"),
    (["train", "--schedule", "linear"], "invalid choice: 'linear'"),
    (["train", "--schedule", "two-phase", "--decay-epochs", "5"],
     "only used by --schedule step"),
    (["train", "--batch-size", "4096"], "--batch-size=4096"),
    (["compare", "--preset", "cifar10-cpu"], "pass --data-dir"),
    (["compare", "--preset", "nope"], "must name a preset; one of demo, "),
    (["compare", "--preset", "demo", "--only", "LARS"], "--only='LARS'"),
    (["compare", "--preset", "demo", "--seeds", "0"], "--seeds=0"),
])
def test_bad_input_fails_with_one_line_error(argv, message, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "x")]
    assert _status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-lrphase")
    assert "error:" in err and message in err
    assert not os.path.exists(tmp_path / "x" / "history.csv")


def test_image_folder_with_wrong_layout(tmp_path, capsys):
    (tmp_path / "train" / "a").mkdir(parents=True)
    status = main(["train", "--dataset", "folder", "--data-dir", str(tmp_path)])
    assert status == 2
    assert "test/ is missing" in capsys.readouterr().err


def _status(argv):
    """`main`'s exit status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_module_entry_point_exit_status():
    result = subprocess.run(
        [sys.executable, "-m", "keras_lrphase", "train", "--dataset", "mnist"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if "error:" in l]
    assert errors == ["keras-lrphase train: error: Argument --dataset must be one "
                      "of digits, cifar10, cifar100, svhn, folder, imagenet. Received: "
                      "--dataset='mnist'"]


@pytest.mark.slow  # the jax job of .ci/run trains the CLI end to end on JAX
@pytest.mark.jax
def test_train_on_jax_backend(image_dir, tmp_path):
    pytest.importorskip("jax")
    out = str(tmp_path / "jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-m", "keras_lrphase", "train", "--dataset", "folder",
         "--data-dir", image_dir, "--cache-dir", str(tmp_path / "cache"),
         "--model", "small-cnn", "--batch-size", "8", "--accumulate", "2",
         "--epochs", "2", "--warmup-epochs", "1", "--schedule", "two-phase",
         "--plateau-patience", "1", "--hessian-batch-size", "16",
         "--verbose", "0", "--out", out],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(pathlib.Path(os.path.join(out, "summary.json")).read_text())
    assert summary["backend"] == "jax" and summary["epochs_completed"] == 2
    _, rows = _read_history(os.path.join(out, "history.csv"))
    np.testing.assert_allclose(float(rows[0]["learning_rate"]),
                               0.1 * (1 / 6 + 25 / 36), rtol=1e-6)


def test_run_folder_names():
    from keras_lrphase.training.compare import slug as _slug

    assert [_slug(label) for label in ("small-batch", "two-phase + LARS", "LARS")] == [
        "small-batch", "two-phase-LARS", "LARS"]


def test_output_folder_problems_are_found_before_any_work(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["train", "--out", str(afile)]) == 2
    assert "Argument --out must be a folder; it is a file" in capsys.readouterr().err
    assert main(["train", "--out", str(afile / "sub")]) == 2
    assert f"{str(afile)!r} is a file" in capsys.readouterr().err
    assert main(["compare", "--preset", "demo", "--out", str(afile)]) == 2


def test_errors_name_the_flags(capsys):
    assert main(["train", "--lr", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "keras-lrphase train: error: Argument --lr must be a positive number. "
        "Received: --lr=-1.0")
    assert main(["train", "--dataset", "cifar10", "--data-dir", "/nowhere"]) == 2
    assert "Argument --data-dir must be" in capsys.readouterr().err


def test_a_missing_backend_is_one_line_not_a_traceback(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="torch")
    if subprocess.run([sys.executable, "-c", "import torch"], env=env,
                      capture_output=True).returncode == 0:
        pytest.skip("torch is installed")
    # --help answers without the backend; a command that runs needs it.
    out = subprocess.run([sys.executable, "-m", "keras_lrphase", "--help"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: keras-lrphase" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "keras_lrphase", "train", "--epochs", "1",
         "--out", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "keras-lrphase: error: Keras cannot load its backend (KERAS_BACKEND=torch): "
        "No module named 'torch'. Install it with `pip install torch`, or set "
        "KERAS_BACKEND to an installed backend."]
    assert not os.path.exists(tmp_path / "run")


def test_the_command_prints_no_backend_banner(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", "keras_lrphase", "train", "--lr", "-1"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "keras-lrphase train: error: Argument --lr must be a positive number. "
        "Received: --lr=-1.0"]
    assert out.stdout == ""


def test_compare_prints_one_header_and_one_result_line_per_run(tmp_path, capsys):
    """Not on a terminal: no progress bars, no colour codes."""
    out = str(tmp_path / "demo")
    assert main(["compare", "--preset", "demo", "--epochs", "2", "--out", out,
                 "--only", "large-batch", "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6, lines
    assert [line[:5] for line in lines[:4]] == ["[1/2]"] * 2 + ["[2/2]"] * 2
    assert lines[-2].startswith("Wrote ")
    assert lines[-1].startswith("This demo shows the mechanics")
    assert not any("\x1b" in line or "━" in line for line in lines)


def test_an_out_folder_that_cannot_be_created_is_one_line(capsys):
    # /proc accepts no new folder, even for root (where os.access says it
    # is writable): found before any data is loaded, not as a traceback.
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    assert main(["train", "--out", "/proc/lrphase-out"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "keras-lrphase train: error: Argument --out must be a folder that can "
        "be written; a folder cannot be created in '/proc' (No such file or "
        "directory). Received: --out='/proc/lrphase-out'"]
    assert main(["compare", "--preset", "demo", "--out", "/proc/x/y"]) == 2
    assert "a folder cannot be created in '/proc'" in capsys.readouterr().err


def test_a_mistyped_preset_gets_a_did_you_mean(capsys):
    assert _status(["compare", "--preset", "cifar10-cpus"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "keras-lrphase compare: error: Argument --preset must name a preset; "
        "did you mean 'cifar10-cpu'? (`keras-lrphase compare --help` lists "
        "them all) Received: --preset='cifar10-cpus'"]


def test_train_options_are_run_config_fields_with_their_defaults():
    import dataclasses

    from keras_lrphase.cli import TRAIN_OPTIONS
    from keras_lrphase.cli import _train_config
    from keras_lrphase.cli import parse_args
    from keras_lrphase.training.run_config import RunConfig

    # Every field but `name` (set by compare) is an option of `train`.
    fields = [field.name for field in dataclasses.fields(RunConfig)]
    assert sorted(TRAIN_OPTIONS) == sorted(set(fields) - {"name"})
    assert _train_config(parse_args(["train"])) == RunConfig()
    args = parse_args(["train", "--lr", "0.5", "--decay-epochs", "3,5",
                       "--momentum-correction", "--hessian-batch-size", "64",
                       "--schedule", "two-phase", "--min-delta", "1e-3"])
    assert _train_config(args) == RunConfig(
        lr=0.5, decay_epochs=(3, 5), momentum_correction=True,
        hessian_batch_size=64, schedule="two-phase", min_delta=1e-3)
    # --distributed jax feeds NumPy arrays unless a pipeline is named.
    args = parse_args(["train", "--distributed", "jax"])
    assert _train_config(args).pipeline == "numpy"


def _help(argv, capsys):
    assert _status(argv + ["--help"]) == 0
    return capsys.readouterr().out


def test_help_says_each_default_once_and_readably(capsys):
    from keras_lrphase.presets import PRESETS

    text = _help(["train"], capsys)
    assert "(default: None)" not in text and "0.3333" not in text
    assert "(default: 1/3)" in text and "(default: 128)" in text
    # A help that names its default gets no second one.
    options = text[text.index("options:"):]
    out = options[options.index("--out OUT"):options.index("--verbose {")]
    assert " ".join(out.split()) == "--out OUT output folder (default runs/train-TIME)"
    assert "(default: False)" not in text
    text = _help(["compare"], capsys)
    # The presets are listed once, below the options (not in the usage
    # and the option as argparse's choices).
    assert "{demo," not in text
    for name in PRESETS:
        assert len(re.findall(rf"^  {re.escape(name)} \(", text, re.M)) == 1, name
    assert "usage: keras-lrphase compare [-h] --preset NAME" in text
    # --data-dir: the presets that read an image folder are marked.
    assert "(required by the presets marked [--data-dir] below)" in " ".join(text.split())
    for name, preset in PRESETS.items():
        marked = re.search(rf"^  {re.escape(name)} \([^)]*(\([^)]*\))?\) \[--data-dir\]:",
                           text, re.M)
        assert bool(marked) == preset.requires_data_dir, name
    assert PRESETS["landscape-cpu"].requires_data_dir
    text = _help([], capsys)
    assert "examples:" in text
    assert "keras-lrphase compare --preset demo --out runs/demo" in text


def test_train_without_matplotlib_trains_and_skips_the_plot(
        image_dir, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    out = str(tmp_path / "run")
    assert main(["train", "--dataset", "folder", "--data-dir", image_dir,
                 "--cache-dir", str(tmp_path / "cache"), "--model", "small-cnn",
                 "--batch-size", "8", "--epochs", "1", "--verbose", "0",
                 "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["history.csv", "summary.json"]
    printed = capsys.readouterr().out.splitlines()
    assert [l for l in printed if "matplotlib is" in l] == [
        "curves.png not drawn: matplotlib is not installed (pip install "
        "matplotlib); history.csv holds its curves"]


def test_compare_ends_with_what_two_phase_did_and_the_preset_that_measures_the_gain(
        tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["compare", "--preset", "demo", "--epochs", "2", "--out", out,
                 "--only", "two-phase", "--seeds", "1", "--verbose", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "" not in lines  # no blank lines
    summary = json.loads(pathlib.Path(os.path.join(out, "two-phase", "summary.json")).read_text())
    assert summary["plateau_epoch"] is None  # 2 epochs: still falling
    assert lines[-4:-2] == [
        "What two-phase did (epochs counted from 1):",
        "  two-phase (seed 0): no loss plateau within the 2-epoch budget, so "
        "no switch and no Hessian-aware decay (the loss was still falling); "
        f"curves: {out}/two-phase/curves.png"]
    assert lines[-2] == f"Wrote {out}/table.md and {out}/compare.png"
    assert lines[-1].startswith("This demo shows the mechanics of two-phase")
    assert "The preset that measures the gain is cifar10-cpu" in lines[-1]


def test_mechanics_lines_read_the_summary_as_written():
    from types import SimpleNamespace

    from keras_lrphase.training.compare import RunGroup
    from keras_lrphase.training.compare_report import mechanics_lines

    config = SimpleNamespace(schedule="two-phase", epochs=30, seed=2,
                             extra_epochs_fraction=1 / 3)
    run = SimpleNamespace(label="two-phase")
    late = {"plateau_epoch": 26, "exploration_epochs": None, "decay_epochs": []}
    assert mechanics_lines([RunGroup(run, config, [late], ["o/two-phase/seed2"])]) == [
        "two-phase (seed 2): loss plateau after epoch 26; the switch to the "
        "convergence phase comes 9 epochs later (after epoch 35), past the "
        "30-epoch budget, so no Hessian-aware decay: a longer --epochs shows "
        "them; curves: o/two-phase/seed2/curves.png"]
    done = {"plateau_epoch": 38, "exploration_epochs": 51,
            "decay_epochs": [53, 56, 58]}
    assert "switch to the convergence phase after epoch 51, Hessian-aware " \
           "learning-rate decays after epochs 53, 56 and 58;" in mechanics_lines(
               [RunGroup(run, config, [done], ["o"])])[0]
    step = SimpleNamespace(schedule="step", epochs=30, seed=0)
    assert mechanics_lines([RunGroup(run, step, [done], ["o"])]) == []
