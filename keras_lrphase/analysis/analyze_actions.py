"""The work of `keras-lrphase analyze`: load models and data, analyse, write.

`analyze_command` parses and checks the command line without Keras; `run`
does the rest. Each analysis writes to `--out`:

* `connect`: `connect.json` (loss and accuracy at each `t` of the trained
  curve and of the straight segment, on both splits, with the barrier:
  the highest loss along the path minus the higher end point's) and
  `connect.png` (`plot_connection`);
* `plane`: `plane.json` (the grid's coordinates, loss and accuracy, the
  anchors and the projected models) and `plane_loss.png`,
  `plane_error.png` (`plot_loss_plane`);
* `margins`: `margins.json` (per model: quartiles, interquartile mean,
  percentiles and the fraction of negative margins) and `margins.png`
  (`plot_margins`);
* `transfer`: `transfer.json` (`TransferTable.to_dict`), `transfer.md` and
  `transfer.png` (`plot_transfer`);
* `spectrum`: `spectrum.json` (per model, a spectrum record as
  `HessianSpectrumMonitor` writes one: per measured layer the top
  eigenvalues with their residuals, the trace with its standard error, the
  density with its quadrature nodes and weights), `spectrum_density.png`
  (`plot_hessian_density`) and, with more than one layer,
  `spectrum_layers.png` (`plot_layer_eigenvalues`).

Every JSON also records the models, the data (dataset, classes, examples
per split, normalisation) and the settings. The data are those of `train`:
`load_dataset(--dataset, --data-dir)`, normalised with the per-channel mean
and standard deviation of the whole training split (as `train` normalises
them when it trains on all of it), then restricted to `--classes`
(relabelled) and capped by `--samples` (class-balanced subsets drawn with
seed 0, as `train --train-size` draws them). Models are loaded without
their compilation; the loss is sparse categorical cross-entropy, on logits
unless the model ends in a softmax, plus the model's regularisation losses.
"""

import json
import math
import os
import time

import keras
import numpy as np

from keras_lrphase.analysis import weight_space
from keras_lrphase.analysis.batch_norm_statistics import batch_norm_layers
from keras_lrphase.analysis.curve_plot import plot_connection
from keras_lrphase.analysis.loss_plane import loss_plane
from keras_lrphase.analysis.loss_plane_plot import plot_loss_plane
from keras_lrphase.analysis.margin_plot import plot_margins
from keras_lrphase.analysis.margins import normalized_margins
from keras_lrphase.analysis.margins import quartile_statistics
from keras_lrphase.analysis.mode_connectivity import fit_curve
from keras_lrphase.analysis.mode_connectivity import linear_path
from keras_lrphase.analysis.spectrum_plot import plot_hessian_density
from keras_lrphase.analysis.spectrum_plot import plot_layer_eigenvalues
from keras_lrphase.analysis.transfer_plot import plot_transfer
from keras_lrphase.analysis.transfer_probe import transfer_probe
from keras_lrphase.backend import keras_compat

PERCENTILES = (5, 10, 25, 50, 75, 90, 95)


def model_names(paths):
    """Short, distinct names of model files: their stems, else `dir/stem`.

    >>> model_names(["runs/a/stage1.keras", "runs/a/stage2.keras"])
    ['stage1', 'stage2']
    >>> model_names(["runs/a/final.keras", "runs/b/final.keras"])
    ['a/final', 'b/final']
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    longer = [f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}/{s}"
              for p, s in zip(paths, stems)]
    return longer if len(set(longer)) == len(longer) else list(paths)


def load_models(paths, flag="MODEL"):
    """The models saved at `paths` (without their compilation)."""
    models = []
    for path in paths:
        try:
            models.append(keras.saving.load_model(path, compile=False))
        except Exception as error:  # noqa: BLE001  (reported as bad input)
            detail = str(error).strip().splitlines()
            raise ValueError(
                f"Argument {flag} must be a .keras model that loads "
                f"({type(error).__name__}: {detail[0] if detail else ''}). "
                f"Received: {flag}={path!r}") from None
        if keras_compat.functional_graph(models[-1]) is None:
            raise ValueError(f"Argument {flag} must be a Functional or "
                             f"Sequential model. Received: {flag}={path!r}")
    return models


def check_same_architecture(models, paths, flag="MODEL"):
    """Raises unless all models have the first one's layers and weights."""
    reference = weight_space.architecture(models[0])
    for model, path in zip(models[1:], paths[1:]):
        if weight_space.architecture(model) != reference:
            raise ValueError(
                f"Argument {flag} must have the architecture of {paths[0]!r} "
                "(the same layers and weight shapes, in the same order). "
                f"Received: {flag}={path!r}")


def load_data(args, classes=None):
    """`(train, test, info)`: normalised `(x, y)` splits and their record."""
    from keras_lrphase.data import channel_stats
    from keras_lrphase.data import load_dataset
    from keras_lrphase.data import normalize_array
    from keras_lrphase.data.class_subset import select_classes

    data = load_dataset(args.dataset, args.data_dir, args.cache_dir)
    mean, std = channel_stats(data.x_train)
    if classes is not None:
        data = select_classes(data, classes)
    if args.samples is not None:
        data = data.subset(min(args.samples, len(data.y_train)),
                           min(args.samples, len(data.y_test)), seed=0)
    info = {"dataset": args.dataset, "data_dir": args.data_dir,
            "classes": None if classes is None else list(classes),
            "class_names": list(data.class_names),
            "input_shape": list(data.input_shape),
            "train_examples": int(len(data.y_train)),
            "test_examples": int(len(data.y_test)),
            "normalization": {"mean": mean.tolist(), "std": std.tolist()}}
    train = (normalize_array(data.x_train, mean, std),
             np.asarray(data.y_train, "int32"))
    test = (normalize_array(data.x_test, mean, std),
            np.asarray(data.y_test, "int32"))
    return train, test, info


def check_fits(models, paths, info, classes=True, flag="--dataset"):
    """Raises unless the data fit every model's input (and output) shape."""
    for model, path in zip(models, paths):
        graph = keras_compat.functional_graph(model)
        expected = tuple(keras.tree.flatten(graph.input)[0].shape)[1:]
        got = tuple(info["input_shape"])
        if len(expected) != len(got) or any(
                e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"Argument {flag} must give inputs of the shape model "
                f"{path!r} takes, {expected}; it gives {got}. Received: "
                f"{flag}={info['dataset']!r}")
        outputs = keras.tree.flatten(graph.output)
        count = outputs[0].shape[-1] if len(outputs) == 1 else None
        if classes and count != len(info["class_names"]):
            raise ValueError(
                f"Argument {flag} must have as many classes as model "
                f"{path!r} outputs ({count}); it has "
                f"{len(info['class_names'])}. Received: "
                f"{flag}={info['dataset']!r}")


def classifier_loss(model):
    """Sparse categorical cross-entropy, from logits unless `model` ends in
    a softmax."""
    graph = keras_compat.functional_graph(model)
    produced = keras_compat.producing_call(keras.tree.flatten(graph.output)[0])
    softmax = False
    if produced is not None:
        layer = produced[0]
        softmax = isinstance(layer, keras.layers.Softmax) or (
            getattr(layer, "activation", None) is keras.activations.softmax)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax)


def _plain(value):
    """JSON-ready: arrays to lists, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path, record):
    with open(path, "w") as f:
        json.dump(_plain(record), f, indent=2, allow_nan=False)
        f.write("\n")


def _path_summary(evaluation):
    loss = np.asarray(evaluation["loss"], np.float64)
    accuracy = np.asarray(evaluation["accuracy"], np.float64)
    return {"loss": loss, "accuracy": accuracy,
            "max_loss": float(loss.max()),
            "barrier": float(loss.max() - max(loss[0], loss[-1])),
            "min_accuracy": float(accuracy.min())}


def connect(args, out, paths, names, models):
    model_a, model_b = models
    check_same_architecture(models, paths)
    train, test, info = load_data(args)
    check_fits(models, paths, info)
    loss = classifier_loss(model_a)
    curve = fit_curve(model_a, model_b, train, curve=args.curve,
                      epochs=args.epochs, batch_size=args.batch_size,
                      loss=loss, seed=args.seed)
    segment = linear_path(model_a, model_b, loss=loss)
    ts = np.linspace(0.0, 1.0, args.points)
    recalibrate = bool(batch_norm_layers(model_a)) and not args.no_recalibrate
    results, evaluations = {}, {}
    for label, path in ((args.curve, curve), ("segment", segment)):
        evaluations[label] = {
            split: path.evaluate(ts, data, batch_size=args.batch_size,
                                 recalibrate_data=train if recalibrate
                                 else None)
            for split, data in (("train", train), ("test", test))}
        results[label] = {split: _path_summary(e)
                          for split, e in evaluations[label].items()}
    write_json(os.path.join(out, "connect.json"), {
        "analysis": "connect", "models": dict(zip(names, paths)),
        "data": info, "t": ts,
        "settings": {"curve": args.curve, "epochs": args.epochs,
                     "batch_size": args.batch_size, "seed": args.seed,
                     "batch_norm_recalibrated": recalibrate},
        "paths": results})
    plot_connection(evaluations, os.path.join(out, "connect.png"),
                    labels=names,
                    title=f"{names[0]} to {names[1]}: {args.curve} curve vs "
                          f"segment ({info['dataset']}, "
                          f"{info['train_examples']} train / "
                          f"{info['test_examples']} test)")
    lines = [f"{label}: highest train loss {r['train']['max_loss']:.4f} "
             f"(barrier {r['train']['barrier']:+.4f}), lowest test accuracy "
             f"{100 * r['test']['min_accuracy']:.2f}%"
             for label, r in results.items()]
    return ["connect.json", "connect.png"], lines


def plane(args, out, paths, names, models):
    check_same_architecture(models, paths)
    projected = load_models(args.project, "--project")
    check_same_architecture([models[0]] + projected,
                            [paths[0]] + list(args.project), "--project")
    train, test, info = load_data(args)
    check_fits(models, paths, info)
    data = train if args.split == "train" else test
    recalibrate = bool(batch_norm_layers(models[0])) \
        and not args.no_recalibrate
    result = loss_plane(*models, models[0], data, grid=args.grid,
                        margin=args.margin, points=projected,
                        loss=classifier_loss(models[0]),
                        recalibrate_data=train if recalibrate else None,
                        batch_size=args.batch_size)
    write_json(os.path.join(out, "plane.json"), {
        "analysis": "plane", "models": dict(zip(names, paths)),
        "projected": list(args.project), "data": info,
        "settings": {"split": args.split, "grid": args.grid,
                     "margin": args.margin, "batch_size": args.batch_size,
                     "batch_norm_recalibrated": recalibrate},
        "x": result.x, "y": result.y, "loss": result.loss,
        "accuracy": result.accuracy, "anchors": result.anchors,
        "projections": result.projections})
    for metric in ("loss", "error"):
        plot_loss_plane(result, os.path.join(out, f"plane_{metric}.png"),
                        metric=metric, labels=names,
                        points_label="projected models",
                        title=f"{args.split} {metric} on the plane "
                              f"({info['dataset']})")
    best = np.unravel_index(np.nanargmin(result.loss), result.loss.shape)
    lines = [f"lowest {args.split} loss on the grid {result.loss[best]:.4f} "
             f"at ({result.x[best[1]]:.3g}, {result.y[best[0]]:.3g})"]
    return ["plane.json", "plane_loss.png", "plane_error.png"], lines


def margins(args, out, paths, names, models):
    if args.layer is not None:
        for model, path in zip(models, paths):
            layers = [layer.name for layer in model.layers]
            if args.layer not in layers:
                raise ValueError(
                    f"Argument --layer must name a layer of every model; "
                    f"{path!r} has {layers}. Received: --layer={args.layer!r}")
    train, test, info = load_data(args)
    check_fits(models, paths, info)
    x, y = train if args.split == "train" else test
    values, record = {}, {}
    for name, model in zip(names, models):
        values[name] = normalized_margins(model, x, y, layer=args.layer,
                                          batch_size=args.batch_size)
        finite = values[name][np.isfinite(values[name])]
        record[name] = dict(
            quartile_statistics(values[name]), samples=int(len(finite)),
            negative_fraction=float(np.mean(finite < 0)),
            percentiles=dict(zip(map(str, PERCENTILES),
                                 np.percentile(finite, PERCENTILES))))
    write_json(os.path.join(out, "margins.json"), {
        "analysis": "margins", "models": dict(zip(names, paths)),
        "data": info,
        "settings": {"split": args.split, "layer": args.layer,
                     "batch_size": args.batch_size},
        "margins": record})
    plot_margins(values, os.path.join(out, "margins.png"), bins=args.bins,
                 title=f"Normalized margins, {args.split} split of "
                       f"{info['dataset']} ({len(y)} samples), at "
                       f"{'the input' if args.layer is None else args.layer}")
    lines = [f"{name}: interquartile mean {r['margin_mean_iqr']:.4g}, median "
             f"{r['margin_median']:.4g}, {100 * r['negative_fraction']:.1f}% "
             "negative" for name, r in record.items()]
    return ["margins.json", "margins.png"], lines


def transfer(args, out, paths, names, models):
    train, test, info = load_data(args, classes=args.classes)
    check_fits(models, paths, info, classes=False)
    table = transfer_probe(dict(zip(names, models)), train, test,
                           mode=args.mode, l2=args.l2, epochs=args.epochs,
                           batch_size=args.batch_size, learning_rate=args.lr,
                           momentum=args.momentum, seed=args.seed)
    write_json(os.path.join(out, "transfer.json"), dict(
        analysis="transfer", models=dict(zip(names, paths)), data=info,
        **table.to_dict()))
    with open(os.path.join(out, "transfer.md"), "w") as f:
        f.write(table.to_markdown())
    plot_transfer(table, os.path.join(out, "transfer.png"))
    lines = [", ".join(f"{row.name} {100 * row.accuracy:.2f}%"
                       for row in table.rows)]
    if table.ratios:
        lines.append(", ".join(f"{k} = {v:.3g}"
                               for k, v in table.ratios.items()))
    return ["transfer.json", "transfer.md", "transfer.png"], lines


def spectrum_layers(model, names, path):
    """The layer names `--layers` lists for `model` ("each" expanded)."""
    layers = []
    for name in names:
        if name == "each":
            layers += [layer.name for layer in model.layers
                       if layer.trainable_weights]
        elif name == "all":
            layers.append("all")
        else:
            known = [layer.name for layer in model.layers]
            if name not in known:
                raise ValueError(
                    f"Argument --layers must name layers of every model; "
                    f"{path!r} has {known}. Received: --layers={name!r}")
            if not model.get_layer(name).trainable_weights:
                raise ValueError(
                    f"Argument --layers must name layers with trainable "
                    f"weights; {name!r} of {path!r} has none. Received: "
                    f"--layers={name!r}")
            layers.append(name)
    return list(dict.fromkeys(layers))


def spectrum(args, out, paths, names, models):
    from keras_lrphase.hessian.operator import HessianOperator
    from keras_lrphase.hessian.spectrum import hessian_spectrum
    from keras_lrphase.hessian.spectrum_records import spectrum_record

    requested = [n.strip() for n in args.layers.split(",")]
    layers = {name: spectrum_layers(model, requested, path)
              for name, model, path in zip(names, models, paths)}
    train, test, info = load_data(args)
    check_fits(models, paths, info)
    x, y = train if args.split == "train" else test
    records, lines = {}, []
    for index, (name, model) in enumerate(zip(names, models)):
        loss = classifier_loss(model)
        results, started = {}, time.perf_counter()
        for position, layer in enumerate(layers[name]):
            operator = HessianOperator(
                model, (x, y), layer=layer, loss=loss,
                curvature=args.curvature, training=args.training,
                batch_size=args.batch_size)
            # A layer smaller than the request is measured whole: its
            # `size` eigenvalues, `size` Lanczos steps (exact quadrature).
            results[layer] = hessian_spectrum(
                operator, k=min(args.k, operator.size),
                trace_probes=args.trace_probes,
                density_steps=min(args.density_steps, operator.size),
                density_probes=args.density_probes,
                max_iterations=args.max_iterations,
                tolerance=args.tolerance,
                seed=args.seed + 1009 * index + position)
        records[name] = spectrum_record(
            results, seconds=time.perf_counter() - started)
        for layer, result in results.items():
            parts = [f"{name} [{layer}]"]
            if result.eigenvalues is not None:
                values = ", ".join(f"{v:.4g}" for v in
                                   result.eigenvalues.values)
                parts.append(f"top eigenvalues {values}")
            if result.trace is not None:
                parts.append(f"trace {result.trace.value:.4g} +- "
                             f"{result.trace.standard_error:.2g}")
            lines.append("; ".join(parts))
    write_json(os.path.join(out, "spectrum.json"), {
        "analysis": "spectrum", "models": dict(zip(names, paths)),
        "data": info,
        "settings": {"split": args.split, "layers": args.layers,
                     "k": args.k, "trace_probes": args.trace_probes,
                     "density_steps": args.density_steps,
                     "density_probes": args.density_probes,
                     "curvature": args.curvature, "training": args.training,
                     "tolerance": args.tolerance,
                     "max_iterations": args.max_iterations,
                     "batch_size": args.batch_size, "seed": args.seed},
        "spectrum": records})
    files = ["spectrum.json"]
    what = "Gauss-Newton" if args.curvature == "gauss_newton" else "Hessian"
    where = f"{args.split} split of {info['dataset']} ({len(y)} samples)"
    # The density of every weight ("all") of each model, else of the first
    # layer measured; the largest eigenvalue of each single layer.
    densities, tops, per_layer = {}, {}, {}
    for name, record in records.items():
        entries = record["layers"]
        layer = "all" if "all" in entries else next(iter(entries))
        entry = entries[layer]
        label = name if layer == "all" else f"{name} [{layer}]"
        if "density" in entry:
            densities[label] = entry["density"]
            if "eigenvalues" in entry:
                tops[label] = entry["eigenvalues"]
        per_layer[name] = {layer: entry["eigenvalues"][0]
                           for layer, entry in entries.items()
                           if layer != "all" and "eigenvalues" in entry}
    if densities:
        plot_hessian_density(
            densities, os.path.join(out, "spectrum_density.png"),
            eigenvalues=tops, title=f"{what} spectral density, {where}")
        files.append("spectrum_density.png")
    if any(len(values) > 1 for values in per_layer.values()):
        positive = all(v > 0 for values in per_layer.values()
                       for v in values.values())
        plot_layer_eigenvalues(
            per_layer, os.path.join(out, "spectrum_layers.png"),
            log=positive,
            title=f"Largest {what} eigenvalue of each layer, {where}")
        files.append("spectrum_layers.png")
    return files, lines


ACTIONS = {"connect": connect, "plane": plane, "margins": margins,
           "transfer": transfer, "spectrum": spectrum}


def run(args, out):
    """Runs the analysis of parsed `keras-lrphase analyze` arguments.

    Returns:
        `(files, lines)`: the names of the files written to `out`, and
        lines that sum up the result.

    Raises:
        ValueError: For input that does not fit (the message names the
            flag or MODEL).
    """
    started = time.perf_counter()
    paths = list(args.models)
    models = load_models(paths)
    names = model_names(paths)
    os.makedirs(out, exist_ok=True)
    files, lines = ACTIONS[args.analysis](args, out, paths, names, models)
    lines.append(f"{time.perf_counter() - started:.1f} s")
    return files, lines
