"""`keras-lrphase analyze`: loss-landscape and transfer tools on saved models.

    keras-lrphase analyze connect a.keras b.keras --dataset digits --out o
    keras-lrphase analyze plane a.keras b.keras c.keras --dataset digits
    keras-lrphase analyze margins small.keras large.keras --dataset digits
    keras-lrphase analyze transfer stage1.keras stage2.keras stage3.keras \\
        --dataset digits --classes 5,6,7,8,9 --mode fix
    keras-lrphase analyze spectrum small.keras large.keras --dataset digits \\
        --layers all,each --k 5

Each writes a JSON of its numbers and PNG plots to `--out` (see
`keras_lrphase.analysis.analyze_actions`). The data options are those of
`train` (`--dataset`, `--data-dir`, `--cache-dir`) with `--samples N`, a
class-balanced cap on each split so that an analysis runs on a CPU. Bad
input fails before any work with a one-line error naming the flag (or
`MODEL`) and its value, exit status 2. Importing this module imports no
Keras: `cli.py` builds the parser from it without loading a backend.
"""

import argparse
import datetime
import os
import re

# The models each analysis takes: (fewest, most); None: no limit.
MODEL_COUNTS = {"connect": (2, 2), "plane": (3, 3), "margins": (1, None),
                "transfer": (1, None), "spectrum": (1, None)}
CURVATURES = ("hessian", "gauss_newton")
CURVES = ("bezier", "polychain")
SPLITS = ("train", "test")
TRANSFER_MODES = ("fix", "finetune")

# Messages of the library name its arguments; the command names its flags.
_ARGUMENT_FLAGS = {
    "model_a": "MODEL", "model_b": "MODEL", "w1": "MODEL", "w2": "MODEL",
    "w3": "MODEL", "models": "MODEL", "points": "--project", "layer": "--layer",
    "classes": "--classes", "dataset": "--dataset", "data_dir": "--data-dir",
    "train_size": "--samples", "test_size": "--samples",
    "learning_rate": "--lr", "l2": "--l2", "epochs": "--epochs",
    "k": "--k", "trace_probes": "--trace-probes",
    "density_steps": "--density-steps", "density_probes": "--density-probes",
    "max_iterations": "--max-iterations", "tolerance": "--tolerance",
}


def _classes(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class indices such as 5,6,7, got "
            f"{text!r}") from None
    if len(values) < 2:
        raise argparse.ArgumentTypeError(
            f"expected at least 2 class indices, got {text!r}")
    return values


def _add_common(parser, models_help):
    add = parser.add_argument
    add("models", nargs="+", metavar="MODEL", help=models_help)
    add("--dataset", default="digits",
        help="digits (embedded, default), cifar10, cifar100, svhn or folder "
             "(as for train)")
    add("--data-dir", default=None,
        help="image folder with train/ and test/ (one subfolder per class), "
             "or a prepared TFDS data folder")
    add("--cache-dir", default=None, help="cache of decoded image folders")
    add("--samples", type=int, default=None, metavar="N",
        help="use at most N examples of each split, class-balanced (none: "
             "all)")
    add("--batch-size", type=int, default=128,
        help="batch size of every pass over the data")
    add("--seed", type=int, default=0, help="seed of the random draws")
    add("--out", default=None,
        help="output folder (default runs/analyze-ANALYSIS-TIME)")


def add_analyze_parser(subparsers):
    """Adds `analyze` and its five analyses to `keras-lrphase`'s subparsers.

    Args:
        subparsers: The `add_subparsers()` object of the main parser.

    Returns:
        The `analyze` parser; each analysis's parser is stored in its
        parsed arguments as `analysis_parser`.
    """
    analyze = subparsers.add_parser(
        "analyze", help="analyse saved .keras models: mode connectivity, "
                        "loss plane, margins, transfer, Hessian spectrum",
        description="Analyse saved .keras models; writes a JSON of the "
                    "numbers and PNG plots to --out. Inputs are normalised "
                    "as train normalises them (per-channel statistics of "
                    "the dataset's whole training split).")
    actions = analyze.add_subparsers(dest="analysis", required=True,
                                     parser_class=type(analyze))
    defaults = argparse.ArgumentDefaultsHelpFormatter

    connect = actions.add_parser(
        "connect", formatter_class=defaults,
        help="a low-loss curve between two models vs the straight segment",
        description="Trains a Bezier curve (or polychain) between two "
                    "models of one architecture (fit_curve) and evaluates "
                    "it and the straight segment (linear_path) along t on "
                    "both splits; writes connect.json and connect.png.")
    _add_common(connect, "two .keras models of one architecture (t = 0, 1)")
    connect.add_argument("--curve", choices=CURVES, default="bezier",
                         help="curve family")
    connect.add_argument("--epochs", type=int, default=20,
                         help="epochs of curve training")
    connect.add_argument("--points", type=int, default=11,
                         help="evenly spaced values of t evaluated")
    connect.add_argument("--no-recalibrate", action="store_true",
                         help="keep the interpolated BatchNorm statistics "
                              "instead of recomputing them at each t")

    plane = actions.add_parser(
        "plane", formatter_class=defaults,
        help="loss and error on the plane through three models",
        description="Evaluates the loss and error on the plane through "
                    "three models of one architecture (loss_plane); writes "
                    "plane.json, plane_loss.png and plane_error.png.")
    _add_common(plane, "three .keras models of one architecture")
    plane.add_argument("--grid", type=int, default=11,
                       help="grid values along each axis")
    plane.add_argument("--margin", type=float, default=0.2,
                       help="widening of the grid's range on each side")
    plane.add_argument("--split", choices=SPLITS, default="train",
                       help="data split evaluated")
    plane.add_argument("--project", nargs="+", default=(), metavar="MODEL",
                       help="more models to project onto the plane")
    plane.add_argument("--no-recalibrate", action="store_true",
                       help="interpolate the BatchNorm statistics instead of "
                            "recomputing them at every grid point (one pass "
                            "over the training split each; off the "
                            "triangle, interpolated variances can turn "
                            "negative and the loss NaN)")

    margins = actions.add_parser(
        "margins", formatter_class=defaults,
        help="normalized margin distributions of one or more models",
        description="Computes every sample's normalized margin "
                    "(normalized_margins, Jiang et al.) under each model; "
                    "writes margins.json (quartiles, interquartile mean) "
                    "and margins.png.")
    _add_common(margins, "one or more .keras classifiers")
    margins.add_argument("--layer", default=None,
                         help="take the margins at this layer's input "
                              "(default: the model input)")
    margins.add_argument("--split", choices=SPLITS, default="train",
                         help="data split of the samples")
    margins.add_argument("--bins", type=int, default=40,
                         help="histogram bins of the plot")

    transfer = actions.add_parser(
        "transfer", formatter_class=defaults,
        help="transfer of (stage) models to a target task, with gains",
        description="Transfers each model to the target task (--dataset, "
                    "--classes) with transfer_probe; writes transfer.json, "
                    "transfer.md and transfer.png.")
    _add_common(transfer, "the .keras models, in stage order")
    transfer.add_argument("--mode", choices=TRANSFER_MODES, default="fix",
                          help="fix: linear classifier on frozen features; "
                               "finetune: whole network with a new head")
    transfer.add_argument("--classes", type=_classes, default=None,
                          help="target task: only these classes of "
                               "--dataset, relabelled (e.g. 5,6,7,8,9)")
    transfer.add_argument("--l2", type=float, default=1e-3,
                          help="fix: L2 penalty of the linear classifier")
    transfer.add_argument("--epochs", type=int, default=10,
                          help="finetune: epochs")
    transfer.add_argument("--lr", type=float, default=0.01,
                          help="finetune: SGD learning rate")
    transfer.add_argument("--momentum", type=float, default=0.9,
                          help="finetune: SGD momentum")

    spectrum = actions.add_parser(
        "spectrum", formatter_class=defaults,
        help="Hessian spectrum: top eigenvalues, trace, density, per layer",
        description="Computes the loss Hessian's top eigenvalues (Lanczos), "
                    "trace (Hutch++) and spectral density (stochastic "
                    "Lanczos quadrature) of each model on a data split "
                    "(hessian_spectrum), for every weight or per layer; "
                    "writes spectrum.json, spectrum_density.png and, with "
                    "more than one layer, spectrum_layers.png.")
    _add_common(spectrum, "one or more .keras classifiers")
    spectrum.add_argument(
        "--layers", default="all",
        help="comma-separated: 'all' (every weight), layer names, or 'each' "
             "(every layer with trainable weights, one by one)")
    spectrum.add_argument("--k", type=int, default=5,
                          help="top eigenvalues (0: none)")
    spectrum.add_argument("--trace-probes", type=int, default=30,
                          help="Hutch++ products of the trace (0: none, "
                               "else >= 6)")
    spectrum.add_argument("--density-steps", type=int, default=80,
                          help="Lanczos steps of the density (0: none)")
    spectrum.add_argument("--density-probes", type=int, default=1,
                          help="random probes of the density")
    spectrum.add_argument("--curvature", choices=CURVATURES,
                          default="hessian",
                          help="the Hessian, or the (positive semi-definite) "
                               "Gauss-Newton matrix")
    spectrum.add_argument("--training", action="store_true",
                          help="BatchNorm on batch statistics and Dropout on "
                               "(default: inference mode)")
    spectrum.add_argument("--split", choices=SPLITS, default="train",
                          help="data split the loss is taken over")
    spectrum.add_argument("--tolerance", type=float, default=1e-3,
                          help="relative residual of the eigenvalues")
    spectrum.add_argument("--max-iterations", type=int, default=100,
                          help="most products of the eigenvalues")
    for name, action in (("connect", connect), ("plane", plane),
                         ("margins", margins), ("transfer", transfer),
                         ("spectrum", spectrum)):
        action.set_defaults(analysis_parser=action)
    return analyze


def flag_message(message):
    """Names the command's flags where a message names library arguments."""
    for name, flag in sorted(_ARGUMENT_FLAGS.items(), key=lambda i: -len(i[0])):
        message = re.sub(rf"`{name}`", flag, message)
        message = re.sub(rf"(?<![\w-]){name}=", f"{flag}=", message)
    return message


def _problem(args):
    """The first problem of the arguments (a message), found before work."""
    fewest, most = MODEL_COUNTS[args.analysis]
    count = len(args.models)
    if count < fewest or (most is not None and count > most):
        wanted = (f"exactly {fewest}" if fewest == most
                  else f"at least {fewest}")
        return (f"analyze {args.analysis} takes {wanted} MODEL file"
                f"{'s' if fewest > 1 else ''}; received {count}. "
                f"Received: MODEL={list(args.models)!r}")
    files = [("MODEL", path) for path in args.models]
    files += [("--project", path) for path in getattr(args, "project", ())]
    for flag, path in files:
        if not path.endswith(".keras"):
            return (f"Argument {flag} must be a .keras file (saved with "
                    f"model.save). Received: {flag}={path!r}")
        if not os.path.isfile(path):
            return (f"Argument {flag} must be an existing .keras file. "
                    f"Received: {flag}={path!r}")
    checks = [("--samples", args.samples, 2), ("--batch-size",
                                               args.batch_size, 1),
              ("--seed", args.seed, 0)]
    if args.analysis == "connect":
        checks += [("--epochs", args.epochs, 1), ("--points", args.points, 2)]
    elif args.analysis == "plane":
        checks.append(("--grid", args.grid, 2))
    elif args.analysis == "margins":
        checks.append(("--bins", args.bins, 1))
    elif args.analysis == "spectrum":
        checks += [("--k", args.k, 0), ("--trace-probes", args.trace_probes, 0),
                   ("--density-steps", args.density_steps, 0),
                   ("--density-probes", args.density_probes, 1),
                   ("--max-iterations", args.max_iterations, 1)]
    else:
        checks.append(("--epochs", args.epochs, 1))
    for flag, value, minimum in checks:
        if value is not None and value < minimum:
            return (f"Argument {flag} must be an integer >= {minimum}. "
                    f"Received: {flag}={value}")
    import math

    if args.analysis == "plane" and not (math.isfinite(args.margin)
                                         and args.margin >= 0):
        return ("Argument --margin must be a finite number >= 0. "
                f"Received: --margin={args.margin}")
    if args.analysis == "spectrum":
        if 0 < args.trace_probes < 6:
            return ("Argument --trace-probes must be 0 or an integer >= 6. "
                    f"Received: --trace-probes={args.trace_probes}")
        if not (math.isfinite(args.tolerance) and args.tolerance > 0):
            return ("Argument --tolerance must be a finite number > 0. "
                    f"Received: --tolerance={args.tolerance}")
        names = [n.strip() for n in args.layers.split(",")]
        if not all(names) or len(set(names)) != len(names):
            return ("Argument --layers must be distinct comma-separated "
                    "layer names, 'all' or 'each'. Received: "
                    f"--layers={args.layers!r}")
        if not (args.k or args.trace_probes or args.density_steps):
            return ("Argument --k, --trace-probes or --density-steps must be "
                    "> 0 (nothing to compute). Received: --k=0, "
                    "--trace-probes=0, --density-steps=0")
    if args.analysis == "transfer":
        for flag, value in (("--l2", args.l2), ("--lr", args.lr)):
            if not (math.isfinite(value) and value > 0):
                return (f"Argument {flag} must be a finite number > 0. "
                        f"Received: {flag}={value}")
        if not 0 <= args.momentum < 1:
            return ("Argument --momentum must be in [0, 1). Received: "
                    f"--momentum={args.momentum}")
        if args.classes is not None and len(set(args.classes)) != len(
                args.classes):
            return ("Argument --classes must hold distinct classes. "
                    f"Received: --classes={','.join(map(str, args.classes))}")
    return None


def run_analyze(args):
    """Runs `keras-lrphase analyze ANALYSIS` on parsed arguments.

    Returns:
        The exit status (0 on success, 2 for bad input, 1 when a file
        cannot be read or written).
    """
    from keras_lrphase import cli_support

    parser = args.analysis_parser
    problem = _problem(args)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("runs", f"analyze-{args.analysis}-{stamp}")
    problem = problem or cli_support.setup_problem(out)
    if problem is None:
        from keras_lrphase.data import check_dataset

        try:
            check_dataset(args.dataset, args.data_dir)
        except ValueError as error:
            problem = str(error)
    if problem:
        return cli_support.fail(parser, flag_message(problem))
    from keras_lrphase.analysis import analyze_actions

    try:
        written, lines = analyze_actions.run(args, out)
    except (ValueError, ImportError, OSError) as error:
        return cli_support.fail(parser, flag_message(str(error)), cli_support.status(error))
    for line in lines:
        print(line)
    print(f"Wrote {', '.join(os.path.join(out, name) for name in written)}")
    return 0
