"""`compare`: a preset's runs trained, resumed and reported.

`run_compare(preset, options)` is what `keras-lrphase compare` does once
its options are parsed: it selects the preset's runs (`--only`, `--seeds`,
the overrides), loads their data up front, gives distilled runs their
teacher's model, keeps the runs finished before with the same
configuration, trains the others (one after another, or in `--jobs`
processes), and writes `table.md`, `compare.png`, `results.json` and the
preset's study outputs. It returns a `CompareResult`: one `RunGroup` per
run label, and what the command prints at the end.

Importing this module imports no Keras: `select_runs` checks the options
before a backend is loaded, and the training code is imported when
`run_compare` trains.
"""

import dataclasses
import json
import os
import re
import signal
import time

from keras_lrphase.training import teacher_runs

# The file of a finished run (`runner.SUMMARY_FILE`; repeated so that this
# module imports no Keras).
SUMMARY_FILE = "summary.json"
# The data folder `--redraw` names in the configurations it compares with
# when none is given: nothing is read from it.
REDRAW_DATA = "(not read: --redraw)"


@dataclasses.dataclass
class CompareOptions:
    """The options of one `compare` (those of `keras-lrphase compare`).

    Attributes:
        out: String or None. Output folder; `None`: `runs/PRESET`.
        data_dir: String or None. Data folder of every run.
        cache_dir: String or None. Cache of decoded image folders.
        epochs: Int or None. Epoch budget of every run (its decay epochs,
            warmup and patience scale with it).
        only: String or None. Comma-separated labels of the runs to do.
        seeds: Int or None. Repeat every run with seeds `0..seeds-1`.
        train_size: Int or None. Class-balanced training subset size.
        test_size: Int or None. Class-balanced validation subset size.
        jobs: Int. Runs trained at once, in separate processes.
        pipeline: String or None. Input pipeline of every run.
        precision: String or None. Precision of every run.
        hessian_every: Int or None. Eigenvalue logging period of every run.
        validation_freq: Int or None. Validation period of every run.
        redraw: Bool. Train nothing: report the runs already in `out`.
        export: String or None. Folder the results are exported to.
        verbose: Int. 1: one progress line per run and its result; 2:
            Keras' line per epoch; 0: the results only.
    """

    out: str = None
    data_dir: str = None
    cache_dir: str = None
    epochs: int = None
    only: str = None
    seeds: int = None
    train_size: int = None
    test_size: int = None
    jobs: int = 1
    pipeline: str = None
    precision: str = None
    hessian_every: int = None
    validation_freq: int = None
    redraw: bool = False
    export: str = None
    verbose: int = 1

    def out_folder(self, preset):
        """The output folder: `out`, or `runs/PRESET`."""
        return self.out or os.path.join("runs", preset.name)


@dataclasses.dataclass
class RunGroup:
    """One run of a preset and its finished seeds.

    What `table.md`, the study outputs and the closing lines are made from.

    Attributes:
        run: The `PresetRun` (label, paper accuracy, reference, teacher).
        config: The resolved `RunConfig` of its first seed.
        summaries: List of dicts. Each seed's `summary.json`.
        folders: List of strings. Each seed's output folder, in the order
            of `summaries`.
    """

    run: object
    config: object
    summaries: list = dataclasses.field(default_factory=list)
    folders: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CompareResult:
    """What `run_compare` did.

    Attributes:
        out: String. The output folder.
        groups: List of `RunGroup`, one per run label, in the preset's
            order (runs left out by `--only` or, with `redraw`, not found
            are not listed).
        verdicts: List of strings. The sentences of `table.md`'s "What
            the seeds show" list.
        answer: List of strings. The items of `table.md`'s "The question".
        interrupted: Bool. Whether Ctrl-C stopped the runs (each keeps its
            last completed epoch; `groups` is then empty).
        redrawn: Bool. Whether the reports were redrawn from finished runs
            (`redraw`), training nothing.
    """

    out: str
    groups: list = dataclasses.field(default_factory=list)
    verdicts: list = dataclasses.field(default_factory=list)
    answer: list = dataclasses.field(default_factory=list)
    interrupted: bool = False
    redrawn: bool = False


class SetupError(Exception):
    """A problem found before the first run trains (an option, the data, a
    teacher); the original error is its `__cause__`."""


def select_runs(preset, options, check_data=True):
    """The `(PresetRun, RunConfig)` runs that `compare` trains, each
    configuration validated (no Keras).

    Args:
        preset: The `Preset`.
        options: `CompareOptions`.
        check_data: Bool. Whether `validate` checks the data folders.
            Defaults to `True` (`False` with `redraw`, which reads none).

    Raises:
        ValueError: naming the option, on a bad value.
    """
    if options.seeds is not None and options.seeds < 1:
        raise ValueError(
            f"Argument `seeds` must be >= 1. Received: seeds={options.seeds}")
    data_dir = options.data_dir
    if options.redraw and data_dir is None and preset.requires_data_dir:
        data_dir = REDRAW_DATA  # nothing is read
    runs = preset.configs(
        epochs=options.epochs, data_dir=data_dir,
        cache_dir=options.cache_dir,
        seeds=None if options.seeds is None else tuple(range(options.seeds)))
    if options.only:
        wanted = [label.strip() for label in options.only.split(",")]
        known = [run.label for run in preset.runs]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ValueError(
                f"Argument `only` must name runs of preset {preset.name!r} "
                f"({', '.join(known)}). Received: only={options.only!r}")
        runs = [(run, c) for run, c in runs if run.label in wanted]
    if options.jobs < 1:
        raise ValueError(
            f"Argument `jobs` must be >= 1. Received: jobs={options.jobs}")
    overrides = {k: getattr(options, k) for k in (
        "pipeline", "precision", "train_size", "test_size", "hessian_every",
        "validation_freq") if getattr(options, k) is not None}
    runs = [(run, dataclasses.replace(c, **overrides)) for run, c in runs]
    for _, config in runs:
        config.validate(check_data=check_data and not options.redraw)
    if options.export is not None and os.path.abspath(
            options.export) == os.path.abspath(options.out_folder(preset)):
        raise ValueError(
            "Argument `export` must be another folder than `out`. "
            f"Received: export={options.export!r}")
    return runs


def run_compare(preset, options):
    """Trains (or resumes, or, with `redraw`, reads) a preset's runs and
    writes its reports.

    Prints one line per run (done before, or its result), the study
    outputs' lines, and what a run's header and progress say.

    Args:
        preset: The `Preset`.
        options: `CompareOptions`.

    Returns:
        A `CompareResult`.

    Raises:
        SetupError: from the `ValueError`, `ImportError` or `OSError`
            found before the first run trains (a bad option, a data folder,
            a teacher run), which is its `__cause__`.
    """
    try:
        runs = select_runs(preset, options)
    except ValueError as error:
        raise SetupError(error) from error
    out = options.out_folder(preset)
    os.makedirs(out, exist_ok=True)
    if options.redraw:
        return _redraw(preset, runs, out, options.epochs)
    datasets = _load_data(runs)
    started = time.perf_counter()
    tasks, after = _tasks(runs, out, options.only)
    summaries, pending = _finished(tasks, after)
    try:
        summaries.update(_train(pending, options, datasets, after))
    except KeyboardInterrupt:
        return CompareResult(out, interrupted=True)
    groups = {}
    for run, config, folder, _, _ in tasks:
        group = groups.setdefault(run.label, RunGroup(run, config))
        group.summaries.append(summaries[folder])
        group.folders.append(folder)
    groups = list(groups.values())
    return _write_reports(preset, groups, out, time.perf_counter() - started,
                          options.epochs, tasks, datasets)


def summary_lines(result):
    """The lines `compare` prints at the end: the seeds' verdicts, the
    question's answer, what two-phase did, and the files written."""
    from keras_lrphase.training.compare_report import mechanics_lines

    table = os.path.join(result.out, "table.md")
    figure = os.path.join(result.out, "compare.png")
    if result.redrawn:
        return [f"Wrote {table}"
                + (f" and {figure}" if os.path.exists(figure) else "")]
    lines = []
    if result.verdicts:
        lines.append("What the seeds show (final validation accuracy):")
        lines += [f"  {sentence}" for sentence in result.verdicts]
    if result.answer:
        lines.append("The question:")
        lines += [f"  {line[2:]}" for line in result.answer]
    mechanics = mechanics_lines(result.groups)
    if mechanics:
        lines.append("What two-phase did (epochs counted from 1):")
        lines += [f"  {line}" for line in mechanics]
    if os.path.exists(figure):
        lines.append(f"Wrote {table} and {figure}")
    else:
        lines.append(f"Wrote {table} ({figure} not drawn: matplotlib is not "
                     "installed; pip install matplotlib)")
    return lines


def slug(label):
    """Folder name of a run label: `"two-phase + LARS"` -> `"two-phase-LARS"`.

    Example:

    >>> slug("two-phase + LARS")
    'two-phase-LARS'
    """
    return re.sub(r"[^A-Za-z0-9_]+", "-", label).strip("-")


def data_key(config):
    """What identifies the data a configuration trains on (runs sharing
    it share one loaded copy)."""
    return (config.dataset, config.data_dir, config.train_size,
            config.test_size, config.image_size)


def _load_data(runs):
    """Loads (and caches) every run's data up front, so that a bad folder
    or a batch larger than the data fails before the first run trains."""
    from keras_lrphase.training import runner

    datasets = {}
    try:
        for _, config in runs:
            resolved = config.resolved()
            key = data_key(resolved)
            if key not in datasets:
                datasets[key] = runner.prepare_data(resolved)
            runner.prepare_data_checks(resolved, datasets[key])
    except (ValueError, ImportError, OSError) as error:
        raise SetupError(error) from error
    return datasets


def _folder_of(out, several):
    """`(label, seed) -> folder` of the runs written to `out`."""
    def folder_of(label, seed):
        folder = os.path.join(out, slug(label))
        return os.path.join(folder, f"seed{seed}") if several else folder
    return folder_of


def _tasks(runs, out, only):
    """The runs as `(run, resolved config, folder, prefix, tag)` tasks,
    with distilled runs linked to their teachers; and the dict `student
    folder -> teacher folder` (`teacher_runs.link_teachers`)."""
    several = len({c.seed for _, c in runs}) > 1
    folder_of = _folder_of(out, several)
    tasks = []
    for i, (run, config) in enumerate(runs, 1):
        folder = folder_of(run.label, config.seed)
        tag = f"{run.label}"
        if several:
            tag += f" (seed {config.seed})"
        if config.stage_checkpoints and not os.path.isabs(config.stage_checkpoints):
            config = dataclasses.replace(
                config, stage_checkpoints=os.path.join(folder, config.stage_checkpoints))
        # Resolved once here: what a finished run is compared with, and what
        # a spawned process runs (it could see other installed packages).
        tasks.append((run, config.resolved(), folder, f"[{i}/{len(runs)}]", tag))
    try:
        # A distilled run learns from another run's model, trained first.
        return teacher_runs.link_teachers(tasks, folder_of, only)
    except ValueError as error:
        raise SetupError(error) from error


def _finished(tasks, after):
    """The summaries of the tasks finished before (by folder), and the
    tasks still to train."""
    summaries = {}
    pending = []
    for run, config, folder, prefix, tag in tasks:
        done = _finished_summary(config, folder, f"{prefix} {tag}")
        if done is not None and teacher_runs.teacher_changed(
                config, done, after.get(folder), {p[2] for p in pending}):
            done = None
        if done is not None:
            summaries[folder] = done
            print(f"{prefix} {tag}: done before ({folder}/{SUMMARY_FILE})",
                  flush=True)
        else:
            pending.append((run, config, folder, prefix, tag))
    return summaries, pending


def _train(pending, options, datasets, after):
    """Trains the pending tasks; their summaries by folder."""
    from keras_lrphase.training import runner

    if options.jobs > 1 and len(pending) > 1:
        return _run_parallel(pending, options.jobs, after)
    summaries = {}
    verbose = options.verbose
    for run, config, folder, prefix, tag in pending:
        summaries[folder] = runner.run_training(
            config, folder, verbose=verbose,
            progress=f"{prefix} {tag}" if verbose == 1 else None,
            log=lambda line, prefix=prefix: print(f"{prefix} {line}",
                                                  flush=True),
            data=datasets[data_key(config)], resume=True)
        print_result(run, prefix, tag, summaries[folder])
    return summaries


def _write_reports(preset, groups, out, seconds, epochs, tasks, datasets):
    """`table.md`, `compare.png`, `results.json` and the study outputs."""
    from keras_lrphase.training.compare_report import write_compare_outputs

    verdicts, answer = write_compare_outputs(preset, groups, out, seconds,
                                             epochs)
    data_of = lambda config: datasets[data_key(config)]  # noqa: E731
    lines = ()
    if preset.study == "landscape":
        from keras_lrphase.training.landscape_study import write_landscape_outputs

        lines = write_landscape_outputs(groups, out, data_of)
    elif any(c.snapshot_epochs or c.teacher for _, c, *_ in tasks):
        from keras_lrphase.training.heuristics_study import write_similarity_outputs

        lines = write_similarity_outputs(groups, out, data_of)
    for line in lines:
        print(line, flush=True)
    return CompareResult(out, groups, verdicts, answer)


def _redraw(preset, runs, out, epochs):
    """`compare --redraw`: table.md and compare.png from the runs in `out`
    (each run's summary.json and history.csv), training nothing."""
    from keras_lrphase.training.compare_report import write_compare_outputs

    several = len({c.seed for _, c in runs}) > 1
    folder_of = _folder_of(out, several)
    groups = {}
    for i, (run, config) in enumerate(runs, 1):
        folder = folder_of(run.label, config.seed)
        tag = run.label + (f" (seed {config.seed})" if several else "")
        path = os.path.join(folder, SUMMARY_FILE)
        if not os.path.exists(path):
            print(f"[{i}/{len(runs)}] {tag}: not in {out} (no {path}): left "
                  "out", flush=True)
            continue
        with open(path) as f:
            summary = json.load(f)
        print(f"[{i}/{len(runs)}] {tag}: done before ({path})", flush=True)
        group = groups.setdefault(run.label, RunGroup(run, config.resolved()))
        group.summaries.append(summary)
        group.folders.append(folder)
    if not groups:
        message = (f"--redraw: no finished run of preset {preset.name!r} in "
                   f"{out}")
        raise SetupError(message) from ValueError(message)
    groups = list(groups.values())
    write_compare_outputs(preset, groups, out, 0.0, epochs)
    return CompareResult(out, groups, redrawn=True)


def print_result(run, prefix, tag, summary):
    """Prints a finished run's line: its accuracies, decays and time."""
    decays = ", ".join(str(e) for e in summary["decay_epochs"]) or "none"
    print(f"{prefix} {tag}: best val accuracy "
          f"{_pct(summary['best_val_accuracy'])} (epoch "
          f"{summary['best_epoch']}), final "
          f"{_pct(summary['final_val_accuracy'])}, LR decays after epochs "
          f"{decays}, {summary['train_wall_time_s']:.0f} s"
          + (f", paper {run.paper:.2f}%" if run.paper is not None else ""),
          flush=True)


def _finished_summary(config, folder, tag):
    """The `summary.json` of a run already finished with this (resolved)
    configuration, or None. A run finished with another configuration (a
    changed preset, `--epochs`, `--pipeline`...) is trained again: printed,
    with the fields that differ, under `tag`."""
    path = os.path.join(folder, SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    saved = summary.get("config")
    if config.matches(saved):
        return summary
    if isinstance(saved, dict):
        said = ", ".join(f"{name} {there!r} there, {now!r} now"
                         for name, there, now in config.differences(saved))
        print(f"{tag}: {folder} holds a run finished with another "
              f"configuration ({said}): trained again", flush=True)
    return None


def _ignore_interrupts():
    """A `compare --jobs` worker between runs ignores Ctrl-C (SIGINT): the
    parent stops it, and an idle worker has no run to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_one(config, folder, prefix, tag, every):
    """One run of `compare --jobs` (in its own process). Ctrl-C stops it
    (its last completed epoch is kept); between runs it is ignored."""
    import keras_lrphase
    from keras_lrphase.training import runner

    # A spawned process imports the package as the command did (without
    # its classes registered): register them before a model is loaded.
    keras_lrphase._register_serializables()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        summary = runner.run_training(
            config, folder, verbose=0, progress=f"{prefix} {tag}",
            progress_every=every,
            log=lambda line: print(f"{prefix} {line}", flush=True),
            resume=True)
    finally:
        _ignore_interrupts()
    return folder, summary


def _run_parallel(pending, jobs, after=None):
    """Runs `pending` in `jobs` processes; their summaries by folder.

    Each process imports Keras afresh (spawned, not forked) and reads the
    data from the decode cache filled by the caller. On JAX, processes
    sharing one accelerator take its memory as they need it rather than
    75% each at start. A run listed in `after` (student folder -> teacher
    folder) starts once its teacher, if pending, has finished.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import wait

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    summaries = {}
    context = multiprocessing.get_context("spawn")
    by_folder = {folder: (run, prefix, tag)
                 for run, _, folder, prefix, tag in pending}
    tasks = {folder: (config, folder, prefix, tag)
             for _, config, folder, prefix, tag in pending}
    waiting, unfinished = list(tasks), set(tasks)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                             initializer=_ignore_interrupts) as pool:
        futures = set()
        try:
            while unfinished:
                for folder in teacher_runs.ready_runs(waiting, after or {},
                                                      unfinished):
                    waiting.remove(folder)
                    config = tasks[folder][0]
                    futures.add(pool.submit(_run_one, *tasks[folder],
                                            max(1, config.epochs // 10)))
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    folder, summary = future.result()
                    summaries[folder] = summary
                    unfinished.discard(folder)
                    print_result(*by_folder[folder], summary)
        except KeyboardInterrupt:
            # Stop the runs now; each keeps its last completed epoch.
            pool.shutdown(wait=False, cancel_futures=True)
            for process in multiprocessing.active_children():
                process.terminate()
            raise
    return summaries


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"
