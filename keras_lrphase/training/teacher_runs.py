"""Runs of a comparison that distil from another run of the same comparison.

A `PresetRun` with `teacher="label"` is trained by distillation from the
model that the run `label` saves (`save_model`: `<its folder>/model.keras`),
seed by seed. `compare` uses the three functions here so that the
dependency holds in every way a comparison is run:

* `link_teachers`: gives each such run the path of its teacher's model
  (the folder layout is `compare`'s) and says which runs wait for which;
  a teacher run left out with `--only` must have run before;
* `teacher_changed`: a finished student whose teacher is trained again, or
  whose teacher file is no longer the one it learned from (SHA-256 in its
  `summary.json`), is not finished;
* `ready_runs`: with `--jobs`, the runs that may start now (their teacher
  has finished).

Sequential `compare` runs the preset's runs in order: a preset lists its
teachers before their students (`link_teachers` checks it).
"""

import dataclasses
import hashlib
import os

# The file a run with `save_model` writes (`runner.MODEL_FILE`; repeated so
# that this module imports no Keras).
MODEL_FILE = "model.keras"


def link_teachers(tasks, folder_of, only=None):
    """Sets `teacher` of the runs whose `PresetRun` names a teacher run.

    Args:
        tasks: List of tuples whose first three items are the `PresetRun`,
            its `RunConfig` and its output folder (further items are kept
            as they are), in the order `compare` runs them.
        folder_of: Callable `(label, seed) -> folder` giving the output
            folder of any run of the preset (also one not in `tasks`).
        only: String or None. The `--only` that selected `tasks`, for the
            message when it leaves out a teacher never run. Defaults to
            `None`.

    Returns:
        `(tasks, after)`: the tasks with each student's config naming its
        teacher's model file (distillation defaults filled in), and a dict
        `student folder -> teacher folder` for the teachers in `tasks`.

    Raises:
        ValueError: naming `only` when a student's teacher run is neither
            in `tasks` nor finished before (no model file), or naming
            `teacher` when the teacher run comes after its student or does
            not set `save_model`.

    Example:

    >>> from keras_lrphase.presets import PresetRun
    >>> from keras_lrphase.training.run_config import RunConfig
    >>> teacher = PresetRun("T", dict(save_model=True))
    >>> student = PresetRun("S", {}, teacher="T")
    >>> tasks = [(teacher, RunConfig(save_model=True), "out/T"),
    ...          (student, RunConfig(), "out/S")]
    >>> linked, after = link_teachers(tasks, lambda label, seed: f"out/{label}")
    >>> linked[1][1].teacher, linked[1][1].temperature, after
    ('out/T/model.keras', 5.0, {'out/S': 'out/T'})

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 5 (a
        teacher trained first, then a student from its softened outputs).
    """
    position = {(task[0].label, task[1].seed): i for i, task in enumerate(tasks)}
    linked, after = [], {}
    for i, (run, config, folder, *rest) in enumerate(tasks):
        label = getattr(run, "teacher", None)
        if label is not None:
            where = position.get((label, config.seed))
            if where is None:
                teacher_folder = folder_of(label, config.seed)
                path = os.path.join(teacher_folder, MODEL_FILE)
                if not os.path.isfile(path):
                    raise ValueError(
                        f"Argument `only` leaves out run {label!r}, the "
                        f"teacher of {run.label!r}, which has not been run "
                        f"(no {path}): add it to --only. Received: only="
                        f"{only!r}")
            else:
                teacher_run, teacher_config, teacher_folder = tasks[where][:3]
                if where > i:
                    raise ValueError(
                        f"Argument `teacher` of run {run.label!r} names run "
                        f"{label!r}, which comes after it: list the teacher "
                        f"first. Received: teacher={label!r}")
                if not teacher_config.save_model:
                    raise ValueError(
                        f"Argument `teacher` of run {run.label!r} names run "
                        f"{label!r}, which does not save its model: give it "
                        f"save_model=True. Received: teacher={label!r}")
                after[folder] = teacher_folder
            config = dataclasses.replace(
                config, teacher=os.path.join(teacher_folder, MODEL_FILE))
            config = config.resolved()
        linked.append((run, config, folder, *rest))
    return linked, after


def teacher_changed(config, summary, teacher_folder=None, pending=()):
    """Whether a finished distilled run must be trained again.

    Args:
        config: Its resolved `RunConfig`.
        summary: Dict. Its `summary.json`.
        teacher_folder: String or None. The folder of its teacher run, when
            that run is part of this comparison.
        pending: Collection of the folders of the runs still to train.

    Returns:
        True when the teacher run is still to train, or the teacher's model
        file is missing or is not the file the run learned from (its
        SHA-256 in `summary["teacher"]`); False for a run without teacher.
    """
    if config.teacher is None:
        return False
    if teacher_folder is not None and teacher_folder in pending:
        return True
    recorded = (summary.get("teacher") or {}).get("sha256")
    if recorded is None or not os.path.isfile(config.teacher):
        return True
    return recorded != file_sha256(config.teacher)


def ready_runs(waiting, after, unfinished):
    """The waiting runs whose teacher has finished, in order.

    Args:
        waiting: List of folders of runs not started yet.
        after: Dict `student folder -> teacher folder` (`link_teachers`).
        unfinished: Collection of the folders of runs not finished yet
            (started or not).

    Returns:
        The folders of `waiting` that may start now.

    Example:

    >>> ready_runs(["T", "S", "I"], {"S": "T"}, {"T", "S", "I"})
    ['T', 'I']
    >>> ready_runs(["S"], {"S": "T"}, {"S"})
    ['S']
    """
    return [folder for folder in waiting if after.get(folder) not in unfinished]


def file_sha256(path):
    """The SHA-256 of a file, in hex (as `summary["teacher"]["sha256"]`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
