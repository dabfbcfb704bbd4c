"""The `keras-lrphase` command line: `train` one run, `compare` a preset.

    keras-lrphase compare --preset demo --out runs/demo
    keras-lrphase train --dataset cifar10 --data-dir /tmp/cifar10 \\
        --batch-size 8192 --accumulate 8 --lr 6.4 --schedule two-phase \\
        --warmup-epochs 10 --epochs 300 --out runs/two-phase

Every run writes `history.csv`, `summary.json` and `curves.png` to its
folder; `compare` also writes `table.md`, `compare.png` and
`results.json`. Bad input fails before training with a one-line error on
stderr and exit status 2. Importing this module imports no Keras: the
parser (`--help`, usage errors) answers without it, and the training code
is imported when a command runs.
"""

import argparse
import dataclasses
import datetime
import os
import sys
import warnings

from keras_lrphase.presets import PRESETS
from keras_lrphase.presets import PRESET_NAMES
from keras_lrphase.presets import get_preset
from keras_lrphase.presets import preset_time
from keras_lrphase.training.compare import CompareOptions
from keras_lrphase.training.compare import select_runs
from keras_lrphase.training.run_config import AUGMENTATIONS
from keras_lrphase.training.run_config import PIPELINES
from keras_lrphase.training.run_config import PRECISIONS
from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.run_config import SCHEDULES

from keras_lrphase.cli_support import INTERRUPTED
from keras_lrphase.cli_support import RUN_ERROR
from keras_lrphase.cli_support import USAGE_ERROR
from keras_lrphase.cli_support import fail as _fail
from keras_lrphase.cli_support import setup_problem as _setup_problem
from keras_lrphase.cli_support import status as _status


# The training code (Keras and its backend) is imported when a command runs.
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit 2)."""
    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help where the help does not say
    its default already and there is one to say (not None, not False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


class _EpilogFormatter(argparse.RawDescriptionHelpFormatter, _HelpFormatter):
    """`_HelpFormatter` with the description and epilog printed as written."""


EXAMPLES = """\
examples:
  # the offline demo: two-phase vs step decay at a large batch (about 5 min)
  keras-lrphase compare --preset demo --out runs/demo
  # one run of your own
  keras-lrphase train --schedule two-phase --batch-size 512 --lr 0.8 \\
      --warmup-epochs 5 --epochs 100 --out runs/two-phase

`keras-lrphase COMMAND --help` lists each command's options."""


def _int_list(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 150,225, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one epoch, got {text!r}")
    return values


# The `train` options named after `RunConfig` fields, in the order
# `--help` lists them: each option's default is the field's, and its type
# the field's (an int, a float, a bool flag), unless the entry gives one.
# `name` is not an option: `compare` names its runs.
TRAIN_OPTIONS = {
    "dataset": dict(
        help="digits (embedded, default), cifar10, cifar100, svhn, folder "
             "or imagenet (streamed from train/ and val/ or TFDS "
             "imagenet2012)"),
    "data_dir": dict(
        help="image folder with train/ and test/ (one subfolder per class), "
             "or a prepared TFDS data folder"),
    "cache_dir": dict(
        help="cache of decoded image folders (default ~/.cache/keras_lrphase "
             "or $KERAS_LRPHASE_CACHE)"),
    "model": dict(
        help="resnet20 (cifar10 default), resnet32/44/56/110, wrn-16-8 (svhn "
             "default), wrn-28-10 (cifar100 default), small-cnn (digits "
             "default), imagenet-resnet50 (imagenet default)"),
    "batch_size": dict(
        help="examples per optimizer step"),
    "epochs": dict(
        help="epoch budget"),
    "lr": dict(
        help="peak learning rate"),
    "momentum": dict(
        help="SGD/LARS momentum"),
    "weight_decay": dict(
        help="L2 coefficient on kernels (gradient term wd * w)"),
    "schedule": dict(
        choices=SCHEDULES,
        help="step: x decay-factor at --decay-epochs; two-phase: TwoPhaseLR; "
             "autodecay: AutoDecay (may stop early); cosine: CosineDecay to 0 "
             "after the warmup; cosine-restarts: SGDR"),
    "decay_epochs": dict(
        type=_int_list,
        help="step schedule: epochs after which the LR decays, e.g. 150,225 "
             "(default 50%%,75%% of --epochs)"),
    "decay_factor": dict(
        help="multiplicative decay (default 0.1 for step, 0.5 for two-phase)"),
    "warmup_epochs": dict(
        help="gradual linear warmup epochs"),
    "lars": dict(
        metavar="COEF",
        help="use LARS with this trust coefficient (e.g. 0.01)"),
    "hessian_batch_size": dict(
        help="examples in the one batch the Hessian eigenvalue is estimated "
             "on (default: the batch size, at least 1024)"),
    "hessian_every": dict(
        help="log the eigenvalue every N epochs for every schedule (0: only "
             "where two-phase needs it)"),
    "validation_freq": dict(
        metavar="N",
        help="validate every N epochs and at the last (default: every epoch)"),
    "plateau_patience": dict(
        help="two-phase: epochs without improvement that make a plateau "
             "(default 5%% of --epochs)"),
    "extra_epochs_fraction": dict(
        help="two-phase: extra epochs after the plateau, as a fraction of "
             "the epochs before it (default: 1/3)"),
    "min_delta": dict(
        help="two-phase: least loss decrease that counts as an improvement"),
    "plateau_rule": dict(
        choices=("flat", "paper"),
        help="two-phase: 'flat' (default) does not count epochs well above "
             "the best loss towards a plateau; 'paper': Algorithm 1 as printed"),
    "excursion_threshold": dict(
        help="two-phase, plateau rule 'flat': relative rise above the best "
             "loss that makes an excursion (default 0.1)"),
    "decay_rule": dict(
        choices=("paper", "significant"),
        help="two-phase: 'paper' (default) decays when the loss and the "
             "eigenvalue both rose; 'significant' only on rises beyond the "
             "run's epoch-to-epoch noise"),
    "decay_threshold": dict(
        help="two-phase, decay rule 'significant': rises must exceed this "
             "many typical epoch-to-epoch changes (default 1)"),
    "min_factor": dict(
        help="two-phase: the decays stop at this fraction of the initial "
             "learning rate; 0 for none, as in the paper (default 0.01)"),
    "restart_epochs": dict(
        help="cosine-restarts: first period in epochs (default 10)"),
    "restart_mult": dict(
        help="cosine-restarts: period multiplier"),
    "autodecay_window": dict(
        help="autodecay: epochs of smoothed loss checked for stability "
             "(default 5)"),
    "autodecay_tolerance": dict(
        help="autodecay: largest relative spread of a stable window "
             "(default 0.05)"),
    "autodecay_drop_threshold": dict(
        help="autodecay: largest ratio of the stage's last to first smoothed "
             "loss that counts as a significant drop (default 0.85)"),
    "momentum_correction": dict(
        help="rescale the momentum velocity by lr_new/lr_old when the "
             "learning rate changes between epochs (Goyal et al. 2017)"),
    "stage_checkpoints": dict(
        metavar="DIR",
        help="save the model of every learning stage (the last epoch before "
             "each decay, and the last epoch) to DIR/stage{N}.keras with a "
             "JSON sidecar"),
    "accumulate": dict(
        metavar="N",
        help="process each batch as N sequential sub-batches (gradient "
             "accumulation); must divide --batch-size"),
    "augment": dict(
        choices=AUGMENTATIONS,
        help="training augmentation (auto: crops and flips for CIFAR, "
             "none for SVHN and folders)"),
    "pipeline": dict(
        choices=PIPELINES,
        help="input pipeline (auto: tf.data when TensorFlow is installed, "
             "else numpy, which runs on every backend; numpy with "
             "--distributed jax; device: the numpy pipeline's batches made "
             "on the accelerator, JAX and torch)"),
    "precision": dict(
        choices=tuple(PRECISIONS),
        help="fp32, or mixed precision with bfloat16 compute (bf16)"),
    "train_size": dict(
        help="train on a class-balanced subset of this size"),
    "test_size": dict(
        help="validate on a class-balanced subset of this size"),
    "eval_batch_size": dict(
        help="batch size of validation"),
    "seed": dict(
        help="seed of the weights, the shuffling, the augmentation and the "
             "Hessian batch"),
    "teacher": dict(
        metavar="PATH.keras",
        help="train the model as the student of this saved teacher "
             "(knowledge distillation; it must output the classes' logits)"),
    "distill_alpha": dict(
        metavar="A",
        help="with --teacher: weight of the hard-label loss; the "
             "distillation loss gets 1 - A (default 0)"),
    "temperature": dict(
        metavar="T",
        help="with --teacher: softmax temperature of the distillation "
             "(default 5)"),
    "image_size": dict(
        help="imagenet: side of the square crops (default 224; training "
             "images resized to a shorter side in 8/7-12/7 of it)"),
    "freeze_epochs": dict(
        metavar="N",
        help="keep the model's trailing stack of Dense layers frozen for "
             "the first N epochs (FreezeLayers; a substitute for warmup)"),
    "snapshot_epochs": dict(
        type=_int_list,
        help="save the weights after these epochs to "
             "OUT/snapshots/epochN.weights.h5, e.g. 0,5 (0: the "
             "initialisation)"),
    "save_model": dict(
        help="save the trained model to OUT/model.keras (e.g. a teacher "
             "for --teacher)"),
}


def _add_field_options(parser):
    """Adds one `--field-name` option per entry of `TRAIN_OPTIONS`, its
    default and type taken from `RunConfig`'s field."""
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    for name, spec in TRAIN_OPTIONS.items():
        field = fields[name]
        kwargs = {"default": field.default}
        if field.type is bool:
            kwargs["action"] = "store_true"
        elif field.type in (int, float) and "choices" not in spec:
            kwargs["type"] = field.type
        kwargs.update(spec)
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def build_parser():
    """The argument parser of `keras-lrphase` (subcommands train, compare)."""
    parser = _Parser(
        prog="keras-lrphase",
        description="Large-batch training with two-phase learning rate "
                    "control (and its baselines), with plots.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=_Parser)
    from keras_lrphase.analyze_command import add_analyze_parser  # no Keras
    parser.subcommands = {"train": _add_train_parser(sub),
                          "compare": _add_compare_parser(sub),
                          "analyze": add_analyze_parser(sub)}
    return parser


def _add_train_parser(sub):
    train = sub.add_parser(
        "train", help="train one configuration",
        description="Train one configuration; writes history.csv, "
                    "summary.json and curves.png to --out.",
        formatter_class=_HelpFormatter)
    _add_field_options(train)
    add = train.add_argument
    add("--out", default=None, help="output folder (default runs/train-TIME)")
    add("--verbose", type=int, choices=(0, 1, 2), default=1,
        help="Keras progress: 1 progress bar, 2 one line per epoch, 0 none")
    add("--distributed", choices=("horovod", "jax"), default=None,
        help="data-parallel training: horovod (launch with horovodrun; "
             "TensorFlow backend) or jax (one command per process with "
             "--coordinator, --num-processes, --process-id; JAX backend). "
             "--batch-size is the global batch, split among the workers; "
             "worker 0 writes the files")
    add("--coordinator", default=None, metavar="HOST:PORT",
        help="--distributed jax: address of process 0")
    add("--num-processes", type=int, default=None, metavar="N",
        help="--distributed jax: number of processes")
    add("--process-id", type=int, default=None, metavar="I",
        help="--distributed jax: this process's index, 0 to N-1")
    return train


def _add_compare_parser(sub):
    compare = sub.add_parser(
        "compare", help="run a preset's configurations and tabulate them",
        description="Run a preset's configurations one after another; "
                    "writes one folder per run plus table.md and "
                    "compare.png to --out.",
        epilog="presets (time on 2 CPU cores; [--data-dir]: reads an image "
               "folder):\n" + "\n".join(
            f"  {n} ({preset_time(PRESETS[n])})"
            f"{' [--data-dir]' if PRESETS[n].requires_data_dir else ''}: "
            f"{PRESETS[n].description}"
            for n in PRESET_NAMES),
        formatter_class=_EpilogFormatter)
    add = compare.add_argument
    add("--preset", required=True, metavar="NAME",
        help="the comparison to run: one of the presets listed below")
    add("--out", default=None, help="output folder (default runs/PRESET)")
    add("--data-dir", default=None,
        help="data folder for every run (required by the presets marked "
             "[--data-dir] below)")
    add("--cache-dir", default=None, help="cache of decoded image folders")
    add("--epochs", type=int, default=None,
        help="override the epoch budget for a quick check (decay epochs, "
             "warmup and patience scale with it; the loss falls as fast per "
             "epoch as before, so a budget that ends before two-phase's "
             "plateau and switch shows no decay: the demo needs 50 or more)")
    add("--only", default=None,
        help="comma-separated labels of the runs to do (default all)")
    add("--seeds", type=int, default=None,
        help="repeat every run with seeds 0..N-1 (default: the preset's "
             "seeds; demo: 3)")
    add("--train-size", type=int, default=None,
        help="train every run on a class-balanced subset of this size "
             "(for a quick check)")
    add("--test-size", type=int, default=None,
        help="validate every run on a class-balanced subset of this size")
    add("--jobs", type=int, default=1, metavar="N",
        help="run N configurations at once, in separate processes (they "
             "share the machine and its accelerator)")
    add("--pipeline", choices=PIPELINES, default=None,
        help="input pipeline of every run (default: the runs' own, auto)")
    add("--precision", choices=tuple(PRECISIONS), default=None,
        help="precision of every run (default: the runs' own, fp32)")
    add("--hessian-every", type=int, default=None, metavar="N",
        help="log the eigenvalue every N epochs in every run (0: only where "
             "two-phase needs it, every epoch; default: the runs' own)")
    add("--validation-freq", type=int, default=None, metavar="N",
        help="validate every N epochs and at the last in every run "
             "(default: the runs' own, every epoch)")
    add("--redraw", action="store_true",
        help="train nothing: redraw table.md and compare.png from the runs "
             "already in --out (e.g. a results folder; no --data-dir needed)")
    add("--export", default=None, metavar="FOLDER",
        help="after the runs, copy each run's history.csv and summary.json, "
             "table.md, progress.md and compare.png into FOLDER with a "
             "README.md (hardware, backend, precision, commit, command)")
    add("--verbose", type=int, choices=(0, 1, 2), default=1,
        help="1: one progress line per run (on a terminal) and its result; "
             "2: Keras' line per epoch; 0: the results only")
    return compare


def _train_config(args):
    values = {name: getattr(args, name) for name in TRAIN_OPTIONS}
    if args.distributed == "jax" and values["pipeline"] == "auto":
        values["pipeline"] = "numpy"  # each process feeds its shard as NumPy arrays
    return RunConfig(**values)


def main(argv=None):
    """Entry point of `keras-lrphase` within a program that imported Keras.

    The command itself runs `keras_lrphase.cli_entry.main`, which checks the
    arguments before it loads a backend.

    Args:
        argv: List of strings or None (`sys.argv[1:]`).

    Returns:
        The exit status (0 on success, 2 for bad input, 1 when a run fails).
    """
    args = parse_args(argv)
    status = check_args(args)
    if status is not None:
        return status
    return run_command(args)


def parse_args(argv=None):
    """Parses the command line without importing Keras.

    `--help` and usage errors exit here (status 0 and 2).

    Args:
        argv: List of strings or None (`sys.argv[1:]`).

    Returns:
        The `argparse.Namespace`, to pass to `check_args` and `run_command`.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.subcommand_parser = parser.subcommands[args.command]
    # The default `--out` of `train` (runs/train-TIME), fixed once.
    args.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --export
    return args


def check_args(args):
    """Checks every option value that needs no backend, without Keras.

    The dataset and model names, the numbers, a missing `--data-dir`, the
    preset and its runs, and whether `--out` can be written: what fails
    here fails in a fraction of a second, before a backend is loaded.

    Returns:
        None, or the exit status 2 after a one-line error on stderr.
    """
    command = args.subcommand_parser
    if args.command == "analyze":
        return None
    try:
        if args.command == "train":
            _train_config(args).validate()
        else:
            select_runs(get_preset(args.preset), _compare_options(args))
    except ValueError as error:
        return _fail(command, error)
    problem = _setup_problem(_out_folder(args), _needs_matplotlib(args))
    if problem:
        return _fail(command, problem)
    return None


def run_command(args):
    """Runs the command of parsed arguments (`parse_args`).

    Warnings raised while it runs are printed as one line each,
    `keras-lrphase: warning: ...`.

    Returns:
        The exit status (0 on success, 2 for bad input, 1 when a run fails).
    """
    command = args.subcommand_parser
    if args.command == "analyze":
        from keras_lrphase.analyze_command import run_analyze
        return run_analyze(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if args.command == "train":
            config = _train_config(args)
            try:
                config.validate()
            except ValueError as error:
                return _fail(command, error)
            out = _out_folder(args)
            problem = _setup_problem(out, _needs_matplotlib(args))
            if problem:
                return _fail(command, problem)
            return _run_train(command, config, out, args.verbose, args)
        problem = _setup_problem(_out_folder(args), _needs_matplotlib(args))
        if problem:
            return _fail(command, problem)
        return _run_compare(command, args)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning during a command: one line, without the source line."""
    sys.stderr.write(f"keras-lrphase: warning: {message}\n")


def _out_folder(args):
    if args.out:
        return args.out
    if args.command == "train":
        return os.path.join("runs", f"train-{args.stamp}")
    return os.path.join("runs", args.preset)


def _needs_matplotlib(args):
    """Whether the command's results are figures: the landscape and SVCCA
    studies. Other runs skip their plots without matplotlib."""
    if args.command != "compare" or args.preset not in PRESETS:
        return False
    preset = PRESETS[args.preset]
    return preset.study == "landscape" or any(
        "snapshot_epochs" in run.overrides or run.teacher
        for run in preset.runs) or "snapshot_epochs" in preset.common


def _run_train(parser, config, out, verbose, args):
    from keras_lrphase.training import runner
    from keras_lrphase.training.workers import start_workers

    try:
        # Joined before anything runs on the backend (JAX requires it).
        workers = start_workers(args.distributed, args.coordinator,
                                args.num_processes, args.process_id)
        data = runner.prepare_data(config.resolved())
        teacher = runner.prepare_teacher(config.resolved(), data)
        runner.check_workers(config.resolved(), data, workers)
    except (ValueError, ImportError, OSError, RuntimeError) as error:
        return _fail(parser, error, _status(error))
    summary = runner.run_training(config, out, verbose=verbose, data=data,
                                  teacher=teacher, workers=workers)
    if workers.is_chief:
        across = (f" ({summary['images_per_second']} images/s across "
                  f"{workers.size} workers)" if workers.distributed else "")
        print(f"{config.name or 'run'}: best val accuracy "
              f"{_pct(summary['best_val_accuracy'])}, final "
              f"{_pct(summary['final_val_accuracy'])}{across}; files in {out}")
    return 0


def _compare_options(args):
    """The `CompareOptions` of parsed `compare` arguments."""
    return CompareOptions(**{field.name: getattr(args, field.name)
                             for field in dataclasses.fields(CompareOptions)})


def _run_compare(parser, args):
    from keras_lrphase.training.compare import SetupError
    from keras_lrphase.training.compare import run_compare
    from keras_lrphase.training.compare import summary_lines

    try:
        preset = get_preset(args.preset)
    except ValueError as error:
        return _fail(parser, error)
    try:
        result = run_compare(preset, _compare_options(args))
    except SetupError as error:
        return _fail(parser, error, _status(error.__cause__))
    if result.interrupted:
        sys.stderr.write(
            f"{parser.prog}: interrupted; the runs keep their last completed "
            f"epoch: call the same command again to continue ({result.out}).\n")
        return INTERRUPTED
    for line in summary_lines(result):
        print(line)
    if args.export:
        _export(result.out, args.export, args.argv)
    if preset.closing and not result.redrawn:
        print(preset.closing)
    return 0


def _export(out, dest, argv):
    import shlex

    from keras_lrphase.training.results_export import export_results

    command = "keras-lrphase " + shlex.join(argv)
    written = export_results(out, dest, command)
    print(f"Exported {len(written)} files to {dest}", flush=True)


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"
