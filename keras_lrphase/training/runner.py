"""Runs one training configuration and writes its history, summary and plot.

`run_training(config, out_dir)` is what `keras-lrphase train` does:

1. validate the configuration (before touching data), load the dataset,
   take the class-balanced subsets asked for, and check the batch sizes
   against it;
2. build the `tf.data` pipelines (train statistics for normalisation,
   crops and flips for CIFAR), the model, and (`keras_lrphase.training.
   builders`) the learning rate, optimizer and callbacks:
   * `step`: a `keras.optimizers.schedules.PiecewiseConstantDecay` whose
     epoch boundaries are converted to the optimizer's raw step counter
     (batches, including gradient accumulation micro-steps);
   * `two-phase`: a constant learning rate driven by
     `keras_lrphase.callbacks.two_phase_lr.TwoPhaseLR`;
   * `autodecay`: a constant learning rate driven by
     `keras_lrphase.callbacks.auto_decay.AutoDecay` (which may stop the
     run before the epoch budget);
   * `cosine-restarts`: `keras.optimizers.schedules.CosineDecayRestarts`
     (SGDR, restarts after `restart_epochs`, periods growing by
     `restart_mult`);
   and `GradualWarmup` on top for `warmup_epochs`, `MomentumCorrection`
   with `momentum_correction`, `StageCheckpoint` with `stage_checkpoints`,
   `FreezeLayers` (the model's trailing Dense stack) for `freeze_epochs`;
3. train with momentum SGD, or `keras_lrphase.optimizers.lars.LARS` when
   `config.lars` is set, with `gradient_accumulation_steps=accumulate`;
   with `config.teacher`, the model is the student of a
   `keras.distillation.Distiller` (`keras_lrphase.training.distillation`),
   and every callback above acts on it (the Hessian eigenvalue is then the
   student's, under the distillation objective);
4. write `history.csv` (per epoch), `summary.json` and `curves.png`, and
   on request the weights after `snapshot_epochs` (`WeightSnapshots`, in
   `snapshots/`) and the trained model (`save_model`: `model.keras`, a
   distilled run's student).

Weight decay is the models' L2 kernel regulariser for every optimizer (LARS
is built with `weight_decay=0`, so its trust ratio sees the regularised
gradient): all configurations minimise the same objective and log the same
loss, which the two-phase plateau detection monitors.
"""

import dataclasses
import json
import math
import os
import shutil
import time

import keras
import numpy as np

from keras_lrphase.callbacks.backup_and_restore import AtomicBackupAndRestore
from keras_lrphase.callbacks.stage_checkpoint import StageCheckpoint
from keras_lrphase.callbacks.weight_snapshots import WeightSnapshots
from keras_lrphase.data import ImageNetData
from keras_lrphase.data import DeviceTrainBatches
from keras_lrphase.data import TrainBatches
from keras_lrphase.data import channel_stats
from keras_lrphase.data import eval_dataset
from keras_lrphase.data import load_dataset
from keras_lrphase.data import normalize_array
from keras_lrphase.data import normalized_batch
from keras_lrphase.data import steps_per_epoch
from keras_lrphase.data import train_dataset
from keras_lrphase.models import get_model
from keras_lrphase.training.builders import build_callbacks
from keras_lrphase.training.builders import build_learning_rate
from keras_lrphase.training.builders import build_optimizer
from keras_lrphase.training.builders import phase_function
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.plots import matplotlib_installed
from keras_lrphase.training.plots import plot_curves
from keras_lrphase.training.progress_line import ProgressLine
from keras_lrphase.training.run_config import PRECISIONS
from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.run_config import validation_epochs
from keras_lrphase.training.workers import Workers

HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
MODEL_FILE = "model.keras"
SNAPSHOT_DIR = "snapshots"
WORKERS_DIR = "workers"
MIN_HESSIAN_BATCH = 1024


def prepare_data(config):
    """Loads the dataset of `config` and applies its subsets and checks.

    The class-balanced subsets (`train_size`, `test_size`) are drawn with a
    fixed seed, so they are the same for every run.

    Returns:
        The `ImageData` to train on (ImageNet: an `ImageNetData`, streamed).
    """
    data = load_dataset(config.dataset, config.data_dir, config.cache_dir,
                        image_size=config.image_size)
    if config.train_size is not None or config.test_size is not None:
        # The subset does not depend on `config.seed`: runs with different
        # seeds train on the same images.
        data = data.subset(config.train_size, config.test_size, seed=0)
    prepare_data_checks(config, data)
    return data


def prepare_data_checks(config, data):
    """Checks the batch sizes of `config` against the loaded `data`."""
    if config.batch_size > data.train_examples:
        raise ValueError(
            "Argument `batch_size` must be at most the number of training "
            f"examples ({data.train_examples}). Received: "
            f"batch_size={config.batch_size}"
        )
    if (config.hessian_batch_size is not None
            and config.hessian_batch_size > data.train_examples):
        raise ValueError(
            "Argument `hessian_batch_size` must be at most the number of "
            f"training examples ({data.train_examples}). Received: "
            f"hessian_batch_size={config.hessian_batch_size}"
        )


def prepare_teacher(config, data, teacher=None):
    """Loads (unless given) and checks the teacher of a resolved `config`.

    Returns:
        The teacher model, or None when `config.teacher` is None.

    Raises:
        ValueError: naming `teacher` when the file does not load or the
            model does not fit the data (input shape, one logit per class).
    """
    if config.teacher is None:
        return None
    from keras_lrphase.training import distillation

    if teacher is None:
        teacher = distillation.load_teacher(config.teacher)
    policy = keras.dtype_policies.get(PRECISIONS[config.precision])
    distillation.check_teacher(teacher, config.teacher, data.input_shape,
                               data.num_classes, dtype=policy.compute_dtype)
    return teacher


def run_training(config, out_dir, verbose=1, log=print, data=None,
                 progress=None, resume=False, progress_every=None,
                 teacher=None, workers=None):
    """Trains one configuration and writes its files to `out_dir`.

    Args:
        config: A `RunConfig`.
        out_dir: String. Folder for `history.csv`, `summary.json` and
            `curves.png` (created).
        verbose: Int. Keras `fit` verbosity (`1`: progress bar, `2`: one
            line per epoch, `0`: silent). Defaults to `1`.
        log: Callable taking one string, for the run's header line, or
            `None` for no header. Defaults to `print`.
        data: `ImageData` or None. The data `prepare_data(config.resolved())`
            returns, when the caller loaded it already. Defaults to `None`
            (loaded here).
        progress: String or None. With a string, Keras' progress bar is
            replaced by one line rewritten in place on a terminal
            (`ProgressLine`), starting with it. Defaults to `None`.
        progress_every: Int or None. With `progress`: print a full
            progress line every so many epochs instead of rewriting one
            line on a terminal. Defaults to `None`.
        resume: Bool. Keep a checkpoint in `out_dir/backup` at every epoch
            end (weights, optimizer, the controllers' state) and continue
            from it when `out_dir` holds one: a run stopped at any point
            and started again with the same arguments ends as one
            uninterrupted run would (exactly with the `numpy` pipeline,
            whose batches depend only on the seed and the epoch). The
            checkpoint is deleted once `summary.json` is written.
            Defaults to `False`.
        teacher: Keras model or None. The model `config.teacher` names,
            when the caller loaded it already (`prepare_teacher`).
            Defaults to `None` (loaded here when `config.teacher` is set).
        workers: `keras_lrphase.training.workers.Workers` or None. This
            process's place in a data-parallel run (`start_workers`):
            `config.batch_size` is then the global batch, each worker
            trains on its shard of the data, and only worker 0 writes the
            run's files (worker `r` writes its `history.csv` to
            `out_dir/workers/rank{r}`). Defaults to `None` (one process).

    Returns:
        The summary dict written to `summary.json` (NaN written as None).

    Example:

    >>> import tempfile
    >>> config = RunConfig(dataset="digits", epochs=2, batch_size=256,
    ...                    train_size=512, test_size=100, hessian_every=0)
    >>> summary = run_training(config, tempfile.mkdtemp(), verbose=0, log=None)
    >>> summary["epochs_completed"], summary["steps_per_epoch"]
    (2, 2)

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 4 (experimental settings) and Appendix A.2.
    """
    started = time.perf_counter()
    config.validate()
    config = config.resolved()
    data, teacher = _load_inputs(config, data, teacher)
    workers = workers or Workers()
    feed = build_pipelines(config, data, workers)
    if not workers.is_chief:
        out_dir = os.path.join(out_dir, WORKERS_DIR, f"rank{workers.rank}")
        log, progress, verbose = None, None, 0
    student = build_model(config, data)
    optimizer = workers.wrap_optimizer(build_optimizer(
        config, build_learning_rate(config, feed.micro_steps)))
    model, teacher_info = compile_model(config, data, student, optimizer,
                                        teacher)
    run = _RunCallbacks(config, out_dir, feed, student, workers, log,
                        resume, teacher_info, verbose, progress,
                        progress_every,
                        build_hessian_batch(config, data, feed, workers))
    if log is not None:
        log(_header_line(config, data, feed, student, workers, teacher))
    train_seconds = _fit(config, model, feed, run)
    return write_outputs(config, out_dir, data, student, feed, run, workers,
                         train_seconds, started, log)


def _load_inputs(config, data=None, teacher=None):
    """Seeds the run and loads (unless given) its data and teacher.

    Returns:
        `(data, teacher)`; the teacher is None without `config.teacher`.
    """
    if teacher is None and config.teacher is not None:
        # Loaded before the seed is set: the student's initial weights are
        # those of the same run without a teacher.
        from keras_lrphase.training.distillation import load_teacher

        teacher = load_teacher(config.teacher)
    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = prepare_data(config)
    return data, prepare_teacher(config, data, teacher)


def _fit(config, model, feed, run):
    """Trains `model` for the epochs of `config`; the seconds `fit` took."""
    fit_start = time.perf_counter()
    model.fit(feed.train, epochs=config.epochs, validation_data=feed.val,
              validation_freq=validation_epochs(config),
              validation_batch_size=(
                  feed.eval_batch if config.pipeline in ("numpy", "device")
                  else None),
              callbacks=run.callbacks, verbose=run.verbose, shuffle=False)
    return time.perf_counter() - fit_start


@dataclasses.dataclass
class Pipelines:
    """The input of one run on this worker (`build_pipelines`).

    Attributes:
        train: The training input `fit` takes (a `tf.data.Dataset`,
            `TrainBatches` or `DeviceTrainBatches`).
        val: The validation input (a dataset or `(x, y)` arrays).
        callbacks: List of callbacks the training input needs (the NumPy
            batches' epoch callback).
        batch: Int. This worker's batch size.
        eval_batch: Int. This worker's validation batch size.
        steps: Int. Optimizer steps per epoch.
        micro_steps: Int. Raw steps per epoch (`steps * accumulate`).
        augment: String. The augmentation applied.
        x_train, y_train: This worker's training arrays (None streamed).
        mean, std: The training set's channel statistics (None streamed).
        streamed: Bool. Whether the data are streamed from files (ImageNet).
    """

    train: object
    val: object
    callbacks: list
    batch: int
    eval_batch: int
    steps: int
    micro_steps: int
    augment: str
    x_train: object = None
    y_train: object = None
    mean: object = None
    std: object = None
    streamed: bool = False


def build_pipelines(config, data, workers):
    """The training and validation input of a resolved `config` on this
    worker (its shard of `data`), as a `Pipelines`."""
    # ImageNet streams its images from files: its own pipelines.
    streamed = isinstance(data, ImageNetData)
    batch = check_workers(config, data, workers)
    eval_batch = max(1, config.eval_batch_size // workers.size)
    x_train = y_train = x_test = y_test = None
    if not streamed:  # this worker's shard (all of it for one process)
        x_train, y_train, x_test, y_test = (workers.shard(a) for a in (
            data.x_train, data.y_train, data.x_test, data.y_test))
    steps = steps_per_epoch(data.train_examples if streamed else len(x_train),
                            batch)
    augment = data.augment if config.augment == "auto" else config.augment
    # Normalised with the whole training set's statistics on every worker.
    mean, std = (None, None) if streamed else channel_stats(data.x_train)
    callbacks = []
    if streamed:
        train_ds = data.train_dataset(config.batch_size, augment=augment,
                                      accumulate=config.accumulate,
                                      seed=config.seed)
        val_ds = data.eval_dataset(config.eval_batch_size)
    elif config.pipeline in ("numpy", "device"):
        batches = (DeviceTrainBatches if config.pipeline == "device"
                   else TrainBatches)
        train_ds = batches(x_train, y_train, batch, mean, std,
                           augment=augment, accumulate=config.accumulate,
                           seed=workers.seed(config.seed))
        callbacks.append(train_ds.epoch_callback())
        val_ds = (normalize_array(x_test, mean, std),
                  np.asarray(y_test, "int32"))
    else:
        train_ds = train_dataset(x_train, y_train, batch, mean, std,
                                 augment=augment, accumulate=config.accumulate,
                                 seed=workers.seed(config.seed))
        val_ds = eval_dataset(x_test, y_test, eval_batch, mean, std)
    return Pipelines(train_ds, val_ds, callbacks, batch, eval_batch, steps,
                     steps * config.accumulate, augment, x_train, y_train,
                     mean, std, streamed)


def build_model(config, data):
    """The model of a resolved `config`, built under its precision policy
    (the global policy is restored afterwards)."""
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[config.precision])
    try:
        return get_model(config.model, data.input_shape, data.num_classes,
                         weight_decay=config.weight_decay)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def compile_model(config, data, student, optimizer, teacher=None):
    """Compiles the model that trains: `student`, or with a `teacher` the
    `Distiller` of both.

    Returns:
        `(model, teacher_info)`: the compiled model, and the teacher's
        record for `summary.json` (None without a teacher).
    """
    model, teacher_info = student, None
    if teacher is not None:
        from keras_lrphase.training import distillation

        teacher_info = distillation.teacher_record(config.teacher, teacher)
        model = distillation.build_distiller(
            teacher, student, config.distill_alpha, config.temperature)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if not model.built:  # a Distiller: built for BackupAndRestore
        model.build((None,) + tuple(data.input_shape))
    return model, teacher_info


def build_hessian_batch(config, data, feed, workers):
    """The batch the Hessian eigenvalue is estimated on.

    Returns:
        `(size, batch)`: the Hessian batch size (None when no callback
        needs the eigenvalue) and this worker's share of the batch (None
        then too).
    """
    size = config.hessian_batch_size or min(
        data.train_examples, max(config.batch_size, MIN_HESSIAN_BATCH))
    if not (config.schedule == "two-phase" or config.hessian_every > 0):
        return None, None
    if feed.streamed:
        return size, data.hessian_batch(size, seed=config.seed)
    # Each worker's own share of the Hessian batch; the controllers
    # average the workers' eigenvalues.
    return size, normalized_batch(
        feed.x_train, feed.y_train, max(1, size // workers.size), feed.mean,
        feed.std, seed=config.seed)


class _RunCallbacks:
    """The callbacks of one run, in the order `fit` calls them, and those
    `write_outputs` reads back.

    Attributes:
        callbacks: List of Keras callbacks.
        controller: The schedule's controller callback, or None.
        recorder: The `EpochRecorder` writing `history.csv`.
        snapshots: The `WeightSnapshots`, or None.
        backup_dir: String. The checkpoint folder of a resumable run.
        resume: Bool. Whether the run keeps a checkpoint in `backup_dir`.
        teacher_info: Dict or None. The teacher's record.
        verbose: Int. The verbosity of `fit` (0 with a `ProgressLine`).
        hessian_size: Int or None. The Hessian batch size
            (`build_hessian_batch`), None when none is used.
    """

    def __init__(self, config, out_dir, feed, student, workers, log, resume,
                 teacher_info, verbose, progress, progress_every, hessian):
        os.makedirs(out_dir, exist_ok=True)
        self.backup_dir = backup_dir = os.path.join(out_dir, BACKUP_DIR)
        self.resume, self.teacher_info = resume, teacher_info
        self.hessian_size, hessian_data = hessian
        callbacks, self.controller = build_callbacks(
            config, feed.micro_steps, hessian_data, verbose=1 if verbose else 0)
        callbacks = workers.callbacks() + callbacks
        announce = None
        if log is not None:
            def announce(kept):
                log(f"continuing {config.name or 'run'} from epoch {kept + 1} "
                    f"of {config.epochs} ({kept} trained before, checkpoint "
                    f"in {backup_dir})")
        self.recorder = EpochRecorder(
            os.path.join(out_dir, HISTORY_FILE),
            phase_fn=phase_function(config), resume=resume,
            on_resume=announce)
        callbacks += feed.callbacks
        callbacks += [keras.callbacks.TerminateOnNaN(), self.recorder]
        self.snapshots = None
        if config.snapshot_epochs:
            # Before BackupAndRestore: a checkpoint at an epoch end is
            # written once that epoch's snapshot is.
            self.snapshots = WeightSnapshots(
                os.path.join(out_dir, SNAPSHOT_DIR), config.snapshot_epochs,
                model=student)
            callbacks.append(self.snapshots)
        if resume:
            _claim_backup(backup_dir, config, feed.steps * config.batch_size,
                          teacher_info)
            # After the recorder: a checkpoint at an epoch end is written
            # once that epoch's history row is.
            callbacks.append(AtomicBackupAndRestore(backup_dir,
                                                   delete_checkpoint=False))
        self.verbose = verbose
        if progress is not None:
            callbacks.append(ProgressLine(progress, every=progress_every))
            self.verbose = 0
        self.callbacks = callbacks


def _header_line(config, data, feed, student, workers, teacher):
    """The run's first line: model, data, batch, schedule, optimizer."""
    optimizer_name = (f"LARS (coefficient {config.lars:g})"
                      if config.lars is not None else "SGD")
    batch = feed.batch
    sub = (f" = {config.accumulate} x {config.batch_size // config.accumulate}"
           if config.accumulate > 1 else "")
    if workers.distributed:
        sub = (f" = {workers.size} workers ({workers.engine}) x {batch}"
               + (f" (= {config.accumulate} x {batch // config.accumulate})"
                  if config.accumulate > 1 else ""))
    teacher = (f", distilled from {config.teacher} (alpha "
               f"{config.distill_alpha:g}, temperature "
               f"{config.temperature:g})" if teacher is not None else "")
    return (f"{config.name or 'run'}: {config.model} "
            f"({student.count_params():,} parameters{teacher}) on {data.name} "
            f"({data.train_examples} train / {data.test_examples} test), batch "
            f"{config.batch_size}{sub}, {config.epochs} epochs, "
            f"{config.schedule} schedule, lr {config.lr:g}, {optimizer_name}, "
            f"backend {keras.backend.backend()}")


def write_outputs(config, out_dir, data, student, feed, run, workers,
                  train_seconds, started, log):
    """Writes a trained run's `summary.json`, `curves.png` (and
    `model.keras` with `save_model`), and deletes its checkpoint.

    Returns:
        The summary dict written (NaN written as None); a worker other
        than 0 writes nothing (its `history.csv` is written already).
    """
    rows = run.recorder.rows
    # A resumed run: this invocation trained only the later epochs; the
    # earlier ones count with their history rows' time, in both totals.
    earlier = sum(r["epoch_time"] for r in rows[:run.recorder.resumed_epochs])
    train_seconds += earlier
    summary = _summary(config, data, student, rows, feed.steps, feed.augment,
                       run.hessian_size, run.controller)
    if workers.distributed:
        summary["workers"] = {"engine": workers.engine, "size": workers.size,
                              "batch_per_worker": feed.batch}
    if not workers.is_chief:
        # Worker r > 0 keeps its history.csv only.
        if run.resume:
            shutil.rmtree(run.backup_dir, ignore_errors=True)
        return summary
    if run.teacher_info is not None:
        summary["teacher"] = run.teacher_info
    stages = [c for c in run.callbacks if isinstance(c, StageCheckpoint)]
    summary["stage_checkpoints"] = stages[0].stages if stages else []
    if run.snapshots is not None:
        summary["snapshots"] = {str(e): os.path.relpath(p, out_dir)
                                for e, p in sorted(run.snapshots.paths.items())}
    if config.save_model:
        # Before summary.json, which marks the run as finished.
        _save_model(student, os.path.join(out_dir, MODEL_FILE))
        summary["model_file"] = MODEL_FILE
    # train_wall_time_s: fit's seconds over every epoch; wall_time_s: those
    # of the epochs trained before a resume plus the whole of this
    # invocation (loading, building, training, writing), so wall_time_s >=
    # train_wall_time_s and both count every epoch once.
    summary["train_wall_time_s"] = round(train_seconds, 2)
    summary["wall_time_s"] = round(earlier + time.perf_counter() - started, 2)
    summary = _finite(summary)
    with open(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False,
                  default=_json_default)
        f.write("\n")
    title = curves_title(config, data.name)
    if matplotlib_installed():
        plot_curves(rows, os.path.join(out_dir, CURVES_FILE), title=title,
                    marks=summary, schedule=config.schedule)
    elif log is not None:
        log(f"{CURVES_FILE} not drawn: matplotlib is not installed (pip "
            f"install matplotlib); history.csv holds its curves")
    if run.resume:
        shutil.rmtree(run.backup_dir, ignore_errors=True)
    return summary


def curves_title(config, dataset):
    """The title of a run's `curves.png`: its name, seed and setting, each
    said once.

    Example:

    >>> curves_title(RunConfig(name="two-phase", schedule="two-phase",
    ...                        batch_size=512, lr=0.8, seed=1).resolved(),
    ...              "digits")
    'two-phase (seed 1): small-cnn on digits, batch 512, lr 0.8'
    >>> curves_title(RunConfig(schedule="step", epochs=8).resolved(), "digits")
    'small-cnn on digits, batch 128, lr 0.1, step decay after epochs 4, 6 (seed 0)'
    >>> curves_title(RunConfig(name="cosine", schedule="cosine").resolved(),
    ...              "digits")
    'cosine (seed 0): small-cnn on digits, batch 128, lr 0.1'
    """
    schedule = {
        "step": ("step decay after epochs "
                 + ", ".join(map(str, config.decay_epochs or ())))
                if config.decay_epochs else "constant learning rate",
        "two-phase": "two-phase",
        "autodecay": "AutoDecay",
        "cosine": "cosine decay",
        "cosine-restarts": "cosine restarts",
    }[config.schedule]
    setting = (f"{config.model} on {dataset}, batch {config.batch_size}, "
               f"lr {config.lr:g}"
               + (f", LARS {config.lars:g}" if config.lars else ""))
    if config.name:
        said = config.name.lower()
        words = schedule.split()[0].lower()
        extra = "" if words in said else f", {schedule}"
        return f"{config.name} (seed {config.seed}): {setting}{extra}"
    return f"{setting}, {schedule} (seed {config.seed})"


def check_workers(config, data, workers):
    """Checks a resolved `config` and its `data` against `workers`.

    Returns:
        The per-worker batch size.

    Raises:
        ValueError: naming the argument, when the global batch does not
            split among the workers, or for what does not shard yet
            (streamed ImageNet, a teacher, the `tf.data` pipeline on JAX
            workers).
    """
    if not workers.distributed:
        return config.batch_size
    for name, value, refused in (
            ("dataset", config.dataset, isinstance(data, ImageNetData)),
            ("teacher", config.teacher, config.teacher is not None),
            ("pipeline", config.pipeline,
             workers.engine == "jax" and config.pipeline != "numpy")):
        if refused:
            raise ValueError(
                f"Argument `{name}` is not supported on several workers yet "
                f"(distributed={workers.engine!r}, {workers.size} workers). "
                f"Received: {name}={value!r}"
            )
    batch = workers.local_batch(config.batch_size, "batch_size")
    if batch % config.accumulate:
        raise ValueError(
            f"Argument `accumulate` must divide the per-worker batch "
            f"({config.batch_size} / {workers.size} workers = {batch}). "
            f"Received: accumulate={config.accumulate}"
        )
    if len(data.x_train) // workers.size < batch:
        raise ValueError(
            f"Argument `batch_size` must be at most the training examples "
            f"({len(data.x_train)}, {len(data.x_train) // workers.size} per "
            f"worker x {workers.size} workers). Received: "
            f"batch_size={config.batch_size}"
        )
    return batch


def _save_model(model, path):
    """Saves `model` to `path` (`.keras`) through a temporary file."""
    partial = path[:-len(".keras")] + ".partial.keras"
    model.save(partial, overwrite=True)
    os.replace(partial, path)


def _claim_backup(backup_dir, config, images_per_epoch, teacher=None):
    """Keeps `backup_dir` only if it was written for this same `config`.

    A checkpoint left by a run of another configuration (other epochs,
    rate, seed, teacher file...) must not be resumed: it is deleted, and
    the run starts from its first epoch. The folder's `run.json` names the
    configuration (with the teacher's SHA-256, when distilling) and the
    images per epoch, for progress reports.
    """
    marker = os.path.join(backup_dir, RUN_FILE)
    wanted = config.to_dict()
    sha256 = None if teacher is None else teacher["sha256"]
    if teacher is not None:
        wanted["teacher_sha256"] = sha256
    if os.path.isdir(backup_dir):
        try:
            with open(marker) as f:
                saved = dict(json.load(f)["config"])
            same = (saved.pop("teacher_sha256", None) == sha256
                    and config.matches(saved))
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            shutil.rmtree(backup_dir)
    if not os.path.isdir(backup_dir):
        os.makedirs(backup_dir)
        partial = marker + ".tmp"
        with open(partial, "w") as f:
            json.dump({"config": wanted,
                       "images_per_epoch": int(images_per_epoch)}, f)
        os.replace(partial, marker)


def _summary(config, data, model, rows, steps, augment, hessian_size,
             controller):
    val = [r["val_accuracy"] for r in rows]
    finite = [(v, i) for i, v in enumerate(val) if not math.isnan(v)]
    best, best_index = max(finite) if finite else (math.nan, -1)
    train_times = [r["train_time"] for r in rows]
    steady = train_times[1:] if len(train_times) > 1 else train_times
    images = steps * config.batch_size
    # The controller's decisions, numbered from 1 as Keras prints epochs.
    decided = controller.summary() if controller is not None else {}
    if controller is None and config.schedule == "step":
        decided["decay_epochs"] = [e for e in config.decay_epochs
                                   if e <= len(rows)]
    stop = decided.get("stop_epoch")
    return {
        "config": config.to_dict(),
        "backend": keras.backend.backend(),
        "dataset": {
            "name": data.name, "source": data.source,
            "train_examples": int(data.train_examples),
            "test_examples": int(data.test_examples),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes, "augment": augment,
        },
        "model_parameters": int(model.count_params()),
        "optimizer": "LARS" if config.lars is not None else "SGD",
        "steps_per_epoch": steps,
        "hessian_batch_size": hessian_size,
        "epochs_completed": len(rows),
        "diverged": (len(rows) < config.epochs and stop is None) or any(
            math.isnan(r["loss"]) for r in rows),
        "stop_epoch": stop,
        "best_val_accuracy": best,
        "best_epoch": best_index + 1 if finite else None,
        # The last validated epoch's (the last epoch, unless the run
        # stopped early between validations: `validation_freq`).
        "final_val_accuracy": finite[-1][0] if finite else math.nan,
        "final_loss": rows[-1]["loss"] if rows else math.nan,
        "final_learning_rate": rows[-1]["learning_rate"] if rows else math.nan,
        "decay_epochs": decided.get("decay_epochs", []),
        "plateau_epoch": decided.get("plateau_epoch"),
        "exploration_epochs": decided.get("exploration_epochs"),
        "images_per_second": (round(images * len(steady) / sum(steady), 1)
                              if steady and sum(steady) > 0 else None),
    }


def _finite(value):
    """NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON serialisable: {value!r}")
