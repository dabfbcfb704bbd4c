"""The answers of the study presets (`keras_lrphase.training.study_findings`)
against hand-computed values, and `table.md`'s "The question" section."""

import csv
import os

import numpy as np
import pytest

from keras_lrphase.training.compare import RunGroup
from keras_lrphase.training.compare_report import write_compare_outputs
from keras_lrphase.presets import PRESETS
from keras_lrphase.presets import get_preset
from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.statistics import seed_difference
from keras_lrphase.training.statistics import welch_t_test
from keras_lrphase.training.study_findings import StudyQuestion
from keras_lrphase.training.study_findings import answer_lines

pytestmark = pytest.mark.backend_neutral


def test_ordered_rows_name_the_best_and_compare_the_last_with_the_first():
    question = StudyQuestion("Later?", "Yes.", kind="best", ordered=True)
    finals = {"d27": [0.60, 0.62, 0.64], "d40": [0.63, 0.64, 0.65],
              "d53": [0.66, 0.67, 0.68], "d67": [0.65, 0.66, 0.67]}
    paper = {"d27": 87.72, "d40": 90.23, "d53": 91.43, "d67": 91.40}
    lines = answer_lines(question, finals, paper=paper)
    _, last_vs_first = seed_difference("d67", finals["d67"], "d27", finals["d27"])
    assert lines == [
        "- Question: Later?",
        "- Paper: Yes.",
        "- Here, final validation accuracy (mean over 3 seeds): d27 62.00%, "
        "d40 64.00%, d53 67.00%, d67 66.00%. Best: d53.",
        f"- {last_vs_first}",
        "- The paper's column: best d53 (91.43%); d67 vs d27: +3.68 points. "
        "Same best row as the paper: yes.",
    ]
    # +4.00 points with seed stds 2 and 1: Welch's t = 4 / sqrt(4/3 + 1/3).
    t, _, p = welch_t_test(finals["d67"], finals["d27"])
    assert t == pytest.approx(4 / np.sqrt(5 / 3))
    assert last_vs_first.startswith("d67 vs d27: +4.00 points (seed std 1.00 "
                                    "and 2.00 points; Welch p = ")


def test_the_default_is_measured_against_the_best_and_outside_rows_apart():
    question = StudyQuestion("Which?", "30%.", kind="best", default="30%",
                             outside=("50%+",))
    finals = {"20%": [0.70, 0.71, 0.72], "30%": [0.69, 0.70, 0.71],
              "50%": [0.65, 0.66, 0.67], "50%+": [0.74, 0.75, 0.76]}
    paper = {"20%": 92.03, "30%": 92.66, "50%": 92.03, "50%+": 92.86}
    lines = answer_lines(question, finals, paper=paper)
    _, default = seed_difference("30%", finals["30%"], "20%", finals["20%"])
    _, outside = seed_difference("50%+", finals["50%+"], "20%", finals["20%"])
    assert default.startswith("30% vs 20%: -1.00 points")
    assert lines[2:] == [
        "- Here, final validation accuracy (mean over 3 seeds): 20% 71.00%, "
        "30% 70.00%, 50% 66.00%, 50%+ 75.00%. Best (of the rows but 50%+): "
        f"20%. The default: {default}",
        f"- {outside}",
        "- The paper's column: best 30% (92.66%); the default 30% is the "
        "best. Same best row as the paper: no.",
        # The paper's best (30%) is the default, already measured against
        # ours above: not said twice.
    ]


def test_one_ordered_row_is_not_compared_with_itself():
    question = StudyQuestion("Later?", "Yes.", kind="best", ordered=True)
    lines = answer_lines(question, {"d40": [0.6748]}, paper={"d40": 90.23})
    assert lines[2:] == [
        "- Here, final validation accuracy (mean over 1 seed): d40 67.48%. "
        "Best: d40.",
        "- The paper's column: best d40 (90.23%). Same best row as the "
        "paper: yes."]


def test_one_seed_says_there_is_no_spread_to_judge_by():
    question = StudyQuestion("Which?", "0.5.", kind="best", default="0.5")
    lines = answer_lines(question, {"0.3": [0.61], "0.5": [0.60]})
    assert lines[2] == (
        "- Here, final validation accuracy (mean over 1 seed): 0.3 61.00%, "
        "0.5 60.00%. Best: 0.3. The default: 0.5 vs 0.3: -1.00 points (one "
        "seed: no seed spread to judge it by).")
    assert len(lines) == 3  # no paper column: no paper line


def _stages_inputs():
    # Losses per seed, epochs 1..4; SGD and GD decay after epoch 2.
    losses = {
        "SGD none": [[2.0, 1.5, 1.48, 1.47], [2.0, 1.6, 1.57, 1.56],
                     [2.0, 1.4, 1.39, 1.37]],
        "SGD d2": [[2.0, 1.5, 1.0, 0.9], [2.0, 1.6, 1.2, 1.1],
                   [2.0, 1.4, 0.95, 0.9]],
        "GD none": [[2.0, 1.9, 1.85, 1.8]] * 3,
        "GD d2": [[2.0, 1.9, 1.86, 1.84], [2.0, 1.9, 1.84, 1.82],
                  [2.0, 1.9, 1.85, 1.83]],
        "GD d3": [[2.0, 1.9, 1.85, 1.84], [2.0, 1.9, 1.85, 1.83],
                  [2.0, 1.9, 1.85, 1.82]],
    }
    bests = {"SGD none": [0.5, 0.5, 0.5], "SGD d2": [0.6, 0.61, 0.62],
             "GD none": [0.4, 0.4, 0.4], "GD d2": [0.41, 0.42, 0.43],
             "GD d3": [0.42, 0.41, 0.43]}
    decays = {"SGD none": None, "SGD d2": 2, "GD none": None, "GD d2": 2,
              "GD d3": 3}
    versus = {"SGD none": None, "SGD d2": "SGD none", "GD none": None,
              "GD d2": "GD none", "GD d3": "GD none"}
    return losses, bests, decays, versus


def test_stage_transition_is_the_loss_drop_of_the_first_epoch_at_the_new_rate():
    losses, bests, decays, versus = _stages_inputs()
    question = StudyQuestion("Stages?", "Yes.", kind="stages")
    lines = answer_lines(question, bests, losses=losses, decays=decays,
                         versus=versus, bests=bests)
    # SGD d2 drops 0.5, 0.4, 0.45 from epoch 2 to 3; SGD none 0.02, 0.03, 0.01.
    sgd = [0.5, 0.4, 0.45]
    assert lines[2] == (
        f"- SGD d2: the training loss fell by {np.mean(sgd):.4f} +- "
        f"{np.std(sgd, ddof=1):.4f} in epoch 3 (the first at the decayed "
        "rate); SGD none: by 0.0200 +- 0.0100 over the same epoch. A stage "
        "transition: the drop is larger than the seed spread.")
    # GD d2: 0.04, 0.06, 0.05 against GD none's 0.05 (no spread).
    assert lines[3] == (
        "- GD d2: the training loss fell by 0.0500 +- 0.0100 in epoch 3 (the "
        "first at the decayed rate); GD none: by 0.0500 +- 0.0000 over the "
        "same epoch. No stage transition shown by these seeds.")
    assert lines[4].startswith("- GD d3: the training loss fell by 0.0")
    assert lines[4].endswith("No stage transition shown by these seeds.")
    _, same = seed_difference("GD d3", bests["GD d3"], "GD d2", bests["GD d2"])
    assert lines[5:] == [
        f"- Best validation accuracy, decays at different epochs: {same}"]


def test_a_run_shorter_than_the_epoch_after_its_decay_is_said_so():
    losses, bests, decays, versus = _stages_inputs()
    losses["GD d3"] = [h[:3] for h in losses["GD d3"]]
    lines = answer_lines(StudyQuestion("?", ".", kind="stages"), bests,
                         losses=losses, decays=decays, versus=versus,
                         bests=bests)
    assert ("- GD d3: fewer than 4 epochs, so no epoch at the decayed rate to "
            "measure.") in lines


def test_rows_left_out_with_only_are_left_out_of_the_answer():
    question = StudyQuestion("Which?", "30%.", kind="best", default="30%",
                             outside=("50%+",))
    finals = {"20%": [0.70, 0.71, 0.72], "40%": [0.69, 0.70, 0.71]}
    lines = answer_lines(question, finals, paper={"20%": 92.03, "40%": 92.54})
    _, paper_best = seed_difference("40%", finals["40%"], "20%", finals["20%"])
    assert paper_best.startswith("40% vs 20%: -1.00 points")
    assert lines[2:] == [
        "- Here, final validation accuracy (mean over 3 seeds): 20% 71.00%, "
        "40% 70.00%. Best (of the rows but 50%+): 20%.",
        "- The paper's column: best 40% (92.54%). Same best row as the "
        "paper: no.",
        f"- The paper's best row here: {paper_best}"]
    # Only the row outside the search: it is the best of what ran.
    lines = answer_lines(question, {"50%+": [0.74, 0.75, 0.76]})
    assert lines[2].endswith("50%+ 75.00%. Best (of the rows but 50%+): 50%+.")
    # Decayed rows whose undecayed row did not run: no loss drop to compare
    # with, but their decays are still compared with each other.
    losses, bests, decays, versus = _stages_inputs()
    del bests["GD none"], losses["GD none"]
    lines = answer_lines(StudyQuestion("?", ".", kind="stages"), bests,
                         losses=losses, decays=decays, versus=versus,
                         bests=bests)
    assert [line.split(":")[0] for line in lines[2:]] == [
        "- SGD d2", "- Best validation accuracy, decays at different epochs"]
    assert lines[-1].endswith(seed_difference(
        "GD d3", bests["GD d3"], "GD d2", bests["GD d2"])[1])


def test_a_question_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="Argument `kind` must be one of "
                       "best, stages. Received: kind='worst'"):
        StudyQuestion("?", ".", kind="worst")


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.question])
def test_every_question_names_rows_of_its_preset(name):
    preset = PRESETS[name]
    labels = [run.label for run in preset.runs]
    question = preset.question
    if question.default is not None:
        assert question.default in labels
    assert set(question.outside) <= set(labels)
    if question.kind == "stages":
        decayed = [run for run in preset.runs if run.overrides["decay_epochs"]]
        assert decayed and all(run.versus in labels for run in decayed)
    else:
        assert all(run.paper is not None for run in preset.runs)


def test_the_four_cpu_studies_ask_their_question():
    assert {n for n, p in PRESETS.items() if p.question} == {
        "cifar10-table1-cpu", "cifar10-table6-cpu", "cifar10-table7-cpu",
        "stages-cpu"}
    assert get_preset("cifar10-table6-cpu").question.default == "extra 30%"
    assert get_preset("cifar10-table7-cpu").question.default == "beta 0.5"
    assert get_preset("cifar10-table1-cpu").question.ordered


def _fake_run(folder, losses, best, final):
    os.makedirs(folder)
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for epoch, loss in enumerate(losses, 1):
            row = dict.fromkeys(COLUMNS, 0.5)
            row.update(epoch=epoch, loss=loss, phase="n/a")
            writer.writerow([row[c] for c in COLUMNS])
    return {"dataset": {"name": "cifar10", "source": "/data",
                        "train_examples": 5000, "test_examples": 5000},
            "backend": "jax", "best_val_accuracy": best,
            "final_val_accuracy": final, "decay_epochs": [],
            "train_wall_time_s": 60.0, "wall_time_s": 60.0,
            "epochs_completed": len(losses), "best_epoch": 1}


def test_table_md_of_the_stages_preset_answers_its_question(tmp_path):
    preset = get_preset("stages-cpu")
    pairs = preset.configs(epochs=4, data_dir=str(tmp_path), seeds=(0, 1))
    grouped = {}
    rng = np.random.default_rng(0)
    for run, config in pairs:
        seed = config.seed
        folder = str(tmp_path / run.label.replace(" ", "-") / f"seed{seed}")
        drop = 0.5 if run.label.startswith("SGD decay") else 0.01
        losses = [2.0, 1.5, 1.5 - drop, 1.4 - drop]
        losses = [v + 0.01 * seed for v in losses]
        best = float(0.5 + 0.01 * rng.integers(0, 5))
        summary = _fake_run(folder, losses, best, best)
        group = grouped.setdefault(run.label, RunGroup(run, config))
        group.summaries.append(summary)
        group.folders.append(folder)
    results = list(grouped.values())
    _, answer = write_compare_outputs(preset, results, str(tmp_path), 10.0, 4)
    table = (tmp_path / "table.md").read_text().splitlines()
    start = table.index("The question:")
    assert table[start + 2:start + 2 + len(answer)] == answer
    assert answer[0] == f"- Question: {preset.question.text}"
    # --epochs 4 scales the decays (SGD's after 30 and 50 of 80, GD's after
    # 150 and 250 of 400) to after epoch 2 (so all measure epoch 3): SGD's
    # drop is 0.5, every other 0.01.
    decays = {run.label: config.decay_epochs for run, config in pairs}
    assert decays["SGD decay 30"] == decays["SGD decay 50"] == (2,)
    assert decays["GD decay 150"] == decays["GD decay 250"] == (2,)
    assert answer[2] == (
        "- SGD decay 30: the training loss fell by 0.5000 +- 0.0000 in epoch "
        "3 (the first at the decayed rate); SGD no decay: by 0.0100 +- 0.0000 "
        "over the same epoch. A stage transition: the drop is larger than the "
        "seed spread.")
    assert answer[4].startswith("- GD decay 150: the training loss fell by "
                                "0.0100 +- 0.0000 in epoch 3")
    assert answer[4].endswith("No stage transition shown by these seeds.")


def test_table_md_names_each_schedule_of_cifar10_cpu_in_its_lr_decay_column(
        tmp_path):
    preset = get_preset("cifar10-cpu")
    results = []
    for run, config in preset.configs(data_dir=str(tmp_path)):
        folder = str(tmp_path / run.label.replace(" ", "-"))
        group = RunGroup(run, config.resolved())
        group.summaries.append(_fake_run(folder, [2.0, 1.5, 1.2, 1.1], 0.5,
                                         0.5))
        group.folders.append(folder)
        results.append(group)
    write_compare_outputs(preset, results, str(tmp_path), 10.0)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[3]
            for line in (tmp_path / "table.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| configuration")}
    assert rows == {
        "small-batch": "step-wise (beta = 0.1)",
        "large-batch": "step-wise (beta = 0.1)",
        "two-phase": "adaptive (beta = 0.5)",
        "two-phase (paper rules)": "adaptive (beta = 0.5)",
        "two-phase (noise-aware decays)": "adaptive (beta = 0.5)",
        "cosine": "cosine to 0 (Keras CosineDecay, warmup 3 epochs)"}
