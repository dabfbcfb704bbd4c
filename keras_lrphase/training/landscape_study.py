"""The loss-landscape study of a comparison: three figures of two papers.

After `compare` has trained the runs of the `landscape-cpu` preset,
`write_landscape_outputs` reads their saved models and weight snapshots and
writes, into the comparison's folder:

* `curves.png` (the Heuristics paper's Figure 1): from the `reference` run
  to each other run that saved its model (`save_model`: trained with
  another batch size, optimizer or learning-rate schedule), the straight
  segment (`linear_path`) and a quadratic Bezier curve whose bend is
  trained for `CURVE_EPOCHS` epochs on the training set (`fit_curve`):
  test accuracy and training loss along `t`. The barrier of a path is its
  highest training loss minus the higher of its end points' (0 when the
  loss never rises above the ends);
* `segments.png` (its Figure 2): for each run with two or more weight
  snapshots that is not a two-phase run (SGDR with restarts, step decay),
  the segment between each pair of consecutive snapshots, and between
  each earlier snapshot and the last (the paper's pairs): the training
  loss and test accuracy along it, and its barrier. A pair "crosses" a
  restart (SGDR) or a decay (step) when it happens between the two
  snapshots;
* `margins.png` (the two-phase paper's Figure 1): for each two-phase run,
  per epoch, the training loss (`history.csv`: what the plateau detector
  saw) and the normalized margins of a fixed sample of `IMAGES` training
  images under that epoch's snapshot (`normalized_margins`: their
  interquartile mean, the paper's statistic, and the quartiles), with the
  run's loss-plateau epoch (`summary.json`'s `plateau_epoch`) marked;
* `landscape.json` (every number) and `landscape.md` (the tables).

How points are evaluated, as `keras-lrphase analyze connect` does: the
images normalised with the training set's channel statistics (as in
training), no augmentation; the loss is the cross-entropy on logits plus
the model's weight decay, in inference mode; at every point of a path,
the end points included, the BatchNorm statistics are recomputed first
(`recalibrate_batch_norm`), so every point of a path is treated alike.
The training loss of a path and the recalibration use a fixed sample of
`EVAL_IMAGES` training images (all of them when fewer; `analyze connect
--samples` bounds the cost the same way: about 2 s per point for
`small-cnn` on 2 cores); accuracy is on the whole test set of the
comparison. The curve fits train on the whole training set (its
`train_size` subset), without augmentation.

Cost on 2 CPU cores for the `landscape-cpu` preset (`small-cnn`, 5,000
training images): about 4 minutes for the three figures.

Seeds are fixed: the curve fits (seed 0), the samples (seed 0).

References:
    Gotmare, Keskar, Xiong and Socher, "A Closer Look at Deep Learning
    Heuristics: Learning Rate Restarts, Warmup and Distillation", ICLR
    2019, Sections 2.1 and 3, Figures 1 and 2.
    "Achieving Small-Batch Accuracy with Large-Batch Scalability via
    Adaptive Learning Rate Adjustment" (ICLR 2022 submission), Section 3.1,
    Figure 1 and Appendix A.1.
    Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast Ensembling
    of DNNs", NeurIPS 2018.
"""

import os

import numpy as np

from keras_lrphase.training.landscape_plots import plot_margin_curves
from keras_lrphase.training.landscape_plots import plot_path_curves
from keras_lrphase.training.landscape_plots import plot_snapshot_segments
from keras_lrphase.training.landscape_report import landscape_markdown
from keras_lrphase.training.landscape_report import margin_line

REFERENCE = "reference"
CURVE = "bezier"
CURVE_EPOCHS = 4
CURVE_POINTS = 11
SEGMENT_POINTS = 9
BATCH_SIZE = 128
IMAGES = 1000
EVAL_IMAGES = 2000
JSON_FILE = "landscape.json"
MARKDOWN_FILE = "landscape.md"
CURVES_PLOT = "curves.png"
SEGMENTS_PLOT = "segments.png"
MARGINS_PLOT = "margins.png"


def normalized_splits(data):
    """`(train, test)`: the `(x, y)` splits of `data`, normalised as in training.

    Args:
        data: `ImageData` (the comparison's data).

    Returns:
        Two tuples of a float32 image array and int32 labels.
    """
    from keras_lrphase.data import channel_stats
    from keras_lrphase.data import normalize_array

    mean, std = channel_stats(data.x_train)
    return tuple(
        (np.asarray(normalize_array(x, mean, std), np.float32),
         np.asarray(y, "int32"))
        for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)))


def margin_sample(train, count=IMAGES, seed=0):
    """`count` training examples drawn with `seed` (all when fewer), in order."""
    x, y = train
    chosen = np.arange(len(y))
    if count < len(y):
        chosen = np.sort(np.random.default_rng(seed).choice(len(y), count,
                                                            replace=False))
    return x[chosen], y[chosen]


class PathEvaluator:
    """Loss and accuracy at points of paths between models of one architecture.

    Gives the numbers of `path.evaluate(ts, data, recalibrate_data=...,
    batch_size=...)` for each split, with the BatchNorm statistics of each
    point recomputed once for all splits, on one scratch copy of the model
    (so that the recalibration and the evaluation are traced once for
    every path, not once per point).

    Args:
        model: A model of the architecture (not modified).
        loss: The loss object of the paths (`classifier_loss`).
        splits: Dict `{split name: (x, y)}` to evaluate on.
        recalibrate_data: `(x, y)` or None (no BatchNorm recalibration).
        batch_size: Int. Defaults to `BATCH_SIZE`.
    """

    def __init__(self, model, loss, splits, recalibrate_data,
                 batch_size=BATCH_SIZE):
        import keras

        from keras_lrphase.analysis import weight_space

        self.scratch = keras.models.clone_model(model)
        self.evaluator = weight_space.PointEvaluator(self.scratch, loss)
        self.splits = splits
        self.recalibrate_data = recalibrate_data
        self.batch_size = batch_size
        self._seen = {}

    def weights_at(self, path, t):
        """The weights at `path`'s point `t`, BatchNorm recalibrated."""
        from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm

        weights = path.weights_at(t)
        if self.recalibrate_data is None:
            return weights
        self.scratch.set_weights(weights)
        recalibrate_batch_norm(self.scratch, self.recalibrate_data,
                               batch_size=self.batch_size)
        return self.scratch.get_weights()

    def __call__(self, path, ts):
        """Dict `{split name: {"t", "loss", "accuracy"}}` of float64 arrays.

        A point whose weights were evaluated before (an end point shared
        by two paths) is not evaluated again.
        """
        found = {name: ([], []) for name in self.splits}
        for t in ts:
            raw = path.weights_at(t)
            key = _fingerprint(raw)
            if key not in self._seen:
                weights = self.weights_at(path, t)
                self._seen[key] = {
                    name: self.evaluator(weights, x, y, len(y),
                                         self.batch_size)
                    for name, (x, y) in self.splits.items()}
            for name, (loss, accuracy) in self._seen[key].items():
                found[name][0].append(loss)
                found[name][1].append(accuracy)
        ts = np.asarray(ts, np.float64)
        return {name: {"t": ts, "loss": np.asarray(losses, np.float64),
                       "accuracy": np.asarray(accuracies, np.float64)}
                for name, (losses, accuracies) in found.items()}


def _fingerprint(weights):
    import hashlib

    digest = hashlib.sha1()
    for w in weights:
        w = np.ascontiguousarray(w)
        digest.update(str((w.shape, w.dtype.str)).encode())
        digest.update(w.tobytes())
    return digest.hexdigest()


def path_evaluator(model, train, test, count=EVAL_IMAGES):
    """A `PathEvaluator` on `{"train", "test"}`, recalibrating BatchNorm on
    the training data when the model has BatchNorm (as `analyze connect`
    does) on all of them or on a fixed sample of `count` (seed 0: the
    cost of every point is bounded, as `analyze connect --samples` bounds
    it); the training loss is on the same examples."""
    from keras_lrphase.analysis.analyze_actions import classifier_loss
    from keras_lrphase.analysis.batch_norm_statistics import batch_norm_layers

    train = margin_sample(train, count)
    return PathEvaluator(model, classifier_loss(model),
                         {"train": train, "test": test},
                         train if batch_norm_layers(model) else None)


def barrier(loss):
    """The highest loss along a path minus the higher end point's (>= 0)."""
    loss = np.asarray(loss, np.float64)
    return float(loss.max() - max(loss[0], loss[-1]))


def _path_record(evaluation):
    train, test = evaluation["train"], evaluation["test"]
    return {"t": train["t"], "train_loss": train["loss"],
            "train_accuracy": train["accuracy"], "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "barrier": barrier(train["loss"]),
            "max_train_loss": float(train["loss"].max()),
            "min_test_accuracy": float(test["accuracy"].min())}


def connect_runs(model_a, model_b, train, evaluate, *, epochs=None,
                 points=None, seed=0):
    """Segment and trained Bezier curve between two models (Figure 1).

    Args:
        model_a, model_b: The end points (same architecture).
        train: `(x, y)`, the training data of the curve fit.
        evaluate: A `PathEvaluator` (`path_evaluator`).
        epochs, points, seed: Curve-fit epochs (None: `CURVE_EPOCHS`),
            points along `t` (None: `CURVE_POINTS`), seed.

    Returns:
        Dict `{"segment": record, "bezier": record}`, each record with
        `t`, `train_loss`, `train_accuracy`, `test_loss`, `test_accuracy`
        arrays and `barrier`, `max_train_loss`, `min_test_accuracy`.
    """
    from keras_lrphase.analysis.analyze_actions import classifier_loss
    from keras_lrphase.analysis.mode_connectivity import fit_curve
    from keras_lrphase.analysis.mode_connectivity import linear_path

    epochs = CURVE_EPOCHS if epochs is None else epochs
    points = CURVE_POINTS if points is None else points
    loss = classifier_loss(model_a)
    curve = fit_curve(model_a, model_b, train, curve=CURVE, epochs=epochs,
                      batch_size=BATCH_SIZE, loss=loss, seed=seed)
    segment = linear_path(model_a, model_b, loss=loss)
    ts = np.linspace(0.0, 1.0, points)
    return {name: _path_record(evaluate(path, ts))
            for name, path in (("segment", segment), (CURVE, curve))}


def segment_between(model_a, model_b, evaluate, points=None):
    """The segment between two models (Figure 2), as `connect_runs`' records
    (`points` None: `SEGMENT_POINTS`)."""
    from keras_lrphase.analysis.analyze_actions import classifier_loss
    from keras_lrphase.analysis.mode_connectivity import linear_path

    points = SEGMENT_POINTS if points is None else points
    path = linear_path(model_a, model_b, loss=classifier_loss(model_a))
    return _path_record(evaluate(path, np.linspace(0.0, 1.0, points)))


def events(config):
    """Epochs after which the learning rate jumps: SGDR restarts, step decays."""
    if config.schedule == "cosine-restarts":
        found, period, end = [], float(config.restart_epochs), 0.0
        while end + period < config.epochs - 1e-9:
            end += period
            found.append(end)
            period *= config.restart_mult
        return [int(e) if float(e).is_integer() else e for e in found], "restart"
    if config.schedule == "step":
        return list(config.decay_epochs or ()), "decay"
    return [], None


def margin_curve(config, folder, summary, data, sample):
    """Per-epoch margins and losses of a run from its snapshots (Figure 3).

    Args:
        config: The run's `RunConfig`; folder: its folder; summary: its
            `summary.json`; data: its `ImageData`; sample: `(x, y)`, the
            normalised training examples (`margin_sample`).

    Returns:
        Dict `epochs`, `train_loss` (`history.csv`'s, per epoch),
        `sample_loss` (the snapshot's loss on the sample, inference mode),
        `margin_q1`, `margin_median`, `margin_q3`, `margin_mean_iqr`
        (lists, one per epoch), `plateau_epoch`, `exploration_epochs`
        (`summary.json`'s) and the batch size; or a string saying why
        there is none.
    """
    from keras_lrphase.analysis import weight_space
    from keras_lrphase.analysis.analyze_actions import classifier_loss
    from keras_lrphase.analysis.margins import MarginFunction
    from keras_lrphase.analysis.margins import quartile_statistics
    from keras_lrphase.training.heuristics_study import snapshot_model

    saved = _snapshots(folder, summary)
    epochs = [e for e in sorted(saved) if e >= 1]
    if not epochs:
        return "no weight snapshot after an epoch"
    history = _history(folder)
    model = snapshot_model(config, data, saved[epochs[0]])
    margins = MarginFunction(model, None, 250)
    evaluator = weight_space.PointEvaluator(model, classifier_loss(model))
    x, y = sample
    found = {"epochs": epochs, "train_loss": [], "sample_loss": [],
             "margin_q1": [], "margin_median": [], "margin_q3": [],
             "margin_mean_iqr": []}
    for epoch in epochs:
        model.load_weights(saved[epoch])
        statistics = quartile_statistics(margins(x, y))
        for key, value in statistics.items():
            found[key].append(value)
        found["sample_loss"].append(
            evaluator(model.get_weights(), x, y, len(y), 250)[0])
        found["train_loss"].append(
            float(history[epoch - 1]["loss"]) if epoch <= len(history)
            else float("nan"))
    found.update(plateau_epoch=summary.get("plateau_epoch"),
                 exploration_epochs=summary.get("exploration_epochs"),
                 decay_epochs=summary.get("decay_epochs"),
                 batch_size=config.batch_size,
                 final_val_accuracy=summary.get("final_val_accuracy"))
    found["margin_change_after_plateau"] = _after_plateau(found)
    return found


def write_landscape_outputs(results, out, data_of, *, reference=REFERENCE,
                            curve_epochs=None, images=None):
    """Writes the three figures, `landscape.json` and `landscape.md`.

    Args:
        results: List of `keras_lrphase.training.compare.RunGroup`, one
            per run, one summary and folder per seed (what `compare`
            tabulates).
        out: String. The comparison's folder.
        data_of: Callable `RunConfig -> ImageData`: the data of a run.
        reference: String. Label of the run the curves start from.
            Defaults to `REFERENCE`.
        curve_epochs: Int or None. Epochs of each curve fit; None:
            `CURVE_EPOCHS`.
        images: Int or None. Training examples of the margin sample; None:
            `IMAGES`.

    Returns:
        The lines of `landscape.md`'s summary, to print.

    References:
        Gotmare et al., ICLR 2019, Figures 1 and 2; the two-phase paper's
        Figure 1 (see the module docstring).
    """
    curve_epochs = CURVE_EPOCHS if curve_epochs is None else curve_epochs
    images = IMAGES if images is None else images
    seeds = max((len(group.summaries) for group in results), default=1)
    record = {"settings": {
        "curve": CURVE, "curve_epochs": curve_epochs,
        "curve_batch_size": BATCH_SIZE, "curve_points": CURVE_POINTS,
        "segment_points": SEGMENT_POINTS, "path_train_images": None, "margin_images": None,
        "batch_norm_recalibrated": ("at every point of a path, on the "
                                    "path_train_images training images"),
        "reference": reference},
        "curves": {}, "segments": {}, "margins": {}}
    inputs = _StudyInputs(data_of, record["settings"])
    lines = _curves_from_reference(results, reference, curve_epochs, seeds,
                                   inputs, record["curves"])
    lines += _snapshot_segments(results, seeds, inputs, record["segments"])
    lines += _margin_curves(results, images, seeds, inputs, record)
    if record["curves"]:
        plot_path_curves(record["curves"], reference,
                         os.path.join(out, CURVES_PLOT), CURVE)
    if record["segments"]:
        plot_snapshot_segments(record["segments"],
                               os.path.join(out, SEGMENTS_PLOT))
    if record["margins"]:
        plot_margin_curves(record["margins"], os.path.join(out, MARGINS_PLOT))
    from keras_lrphase.analysis.analyze_actions import write_json

    write_json(os.path.join(out, JSON_FILE), record)
    with open(os.path.join(out, MARKDOWN_FILE), "w") as f:
        f.write(landscape_markdown(record, lines, CURVE))
    return lines


# -- helpers -------------------------------------------------------------------
class _StudyInputs:
    """The normalized splits and path evaluators of a study, made once each.

    `settings` (the record's) receives the number of training images the
    evaluators use.
    """

    def __init__(self, data_of, settings):
        self.data_of = data_of
        self.settings = settings
        self._splits = {}
        self._evaluators = {}

    def splits(self, config):
        key = (config.dataset, config.data_dir, config.train_size,
               config.test_size)
        if key not in self._splits:
            self._splits[key] = normalized_splits(self.data_of(config))
        return self._splits[key]

    def evaluator(self, config, model):
        # One per architecture and data: traced once for all its paths.
        key = (config.model, config.dataset, config.data_dir,
               config.train_size, config.test_size)
        if key not in self._evaluators:
            self._evaluators[key] = path_evaluator(model, *self.splits(config))
            self.settings["path_train_images"] = int(
                len(self._evaluators[key].splits["train"][1]))
        return self._evaluators[key]


def _curves_from_reference(results, reference, curve_epochs, seeds, inputs,
                           curves):
    """Figure 1: a curve from the reference run to each run that saved its
    model (the same seed's, or the reference's last); fills `curves`,
    returns the summary lines."""
    import keras

    by_label = {group.run.label: group for group in results}
    if reference not in by_label:
        return [f"curves: no {reference!r} run"]
    lines = []
    ref_folders = by_label[reference].folders
    for group in results:
        run, config = group.run, group.config
        if run.label == reference or not config.save_model:
            continue
        for seed, (summary, folder) in enumerate(zip(group.summaries,
                                                     group.folders)):
            name = _name(run.label, summary, seeds)
            k = min(seed, len(ref_folders) - 1)
            paths = [os.path.join(f, "model.keras")
                     for f in (ref_folders[k], folder)]
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                lines.append(f"curve to {name}: no model file {missing[0]}")
                continue
            model_a, model_b = (keras.saving.load_model(p, compile=False)
                                for p in paths)
            if not _finite(model_a, model_b):
                lines.append(f"curve to {name}: the weights are not "
                             "finite (a run diverged)")
                continue
            train, _ = inputs.splits(config)
            found = connect_runs(model_a, model_b, train,
                                 inputs.evaluator(config, model_a),
                                 epochs=curve_epochs)
            found["models"] = paths
            curves[name] = found
            seg, bez = found["segment"], found[CURVE]
            lines.append(
                f"curve {reference} -> {name}: barrier on the segment "
                f"{seg['barrier']:.3f} (lowest test accuracy "
                f"{100 * seg['min_test_accuracy']:.1f}%), on the "
                f"{CURVE} curve {bez['barrier']:.3f} "
                f"({100 * bez['min_test_accuracy']:.1f}%)")
    return lines


def _snapshot_segments(results, seeds, inputs, segments):
    """Figure 2: segments between the snapshots of the runs other than
    two-phase; fills `segments`, returns the summary lines."""
    from keras_lrphase.training.heuristics_study import snapshot_model

    lines = []
    for group in results:
        run, config = group.run, group.config
        if config.schedule == "two-phase" or len(config.snapshot_epochs or ()) < 2:
            continue
        jumps, kind = events(config)
        for summary, folder in zip(group.summaries, group.folders):
            name = _name(run.label, summary, seeds)
            saved = _snapshots(folder, summary)
            epochs = [e for e in sorted(saved) if e >= 1]
            if len(epochs) < 2:
                lines.append(f"segments of {name}: fewer than two snapshots")
                continue
            data = inputs.data_of(config)
            models = {e: snapshot_model(config, data, saved[e]) for e in epochs}
            evaluate = inputs.evaluator(config, models[epochs[0]])
            pairs = []
            # Consecutive snapshots, then each earlier one to the last
            # (the paper's {w30, w150}, {w70, w150}).
            for a, b in list(zip(epochs, epochs[1:])) + [
                    (e, epochs[-1]) for e in epochs[:-2]]:
                found = segment_between(models[a], models[b], evaluate)
                crossed = [e for e in jumps if a <= e < b]
                found.update(epochs=[a, b], crosses=crossed, event=kind)
                pairs.append(found)
            segments[name] = {"schedule": config.schedule, "events": jumps,
                              "event": kind, "pairs": pairs}
            lines.append(f"segments of {name} ({config.schedule}): barriers "
                         + ", ".join(f"{p['epochs'][0]}-{p['epochs'][1]} "
                                     f"{p['barrier']:.3f}" for p in pairs))
    return lines


def _margin_curves(results, images, seeds, inputs, record):
    """Figure 3: margins per epoch of the two-phase runs; fills
    `record["margins"]`, returns the summary lines."""
    lines = []
    for group in results:
        run, config = group.run, group.config
        if config.schedule != "two-phase" or not config.snapshot_epochs:
            continue
        for summary, folder in zip(group.summaries, group.folders):
            name = _name(run.label, summary, seeds)
            train, _ = inputs.splits(config)
            sample = margin_sample(train, images)
            record["settings"]["margin_images"] = int(len(sample[1]))
            found = margin_curve(config, folder, summary,
                                 inputs.data_of(config), sample)
            if isinstance(found, str):
                lines.append(f"margins of {name}: {found}")
                continue
            record["margins"][name] = found
            lines.append(margin_line(name, found))
    return lines


def _snapshots(folder, summary):
    saved = {int(e): os.path.join(folder, p)
             for e, p in (summary.get("snapshots") or {}).items()}
    return {e: p for e, p in saved.items() if os.path.isfile(p)}


def _history(folder):
    from keras_lrphase.training.epoch_recorder import EpochRecorder

    path = os.path.join(folder, "history.csv")
    return EpochRecorder.read(path) if os.path.isfile(path) else []


def _finite(*models):
    return all(np.all(np.isfinite(w)) for m in models for w in m.get_weights())


def _name(label, summary, seeds):
    if seeds > 1:
        return f"{label} (seed {summary['config']['seed']})"
    return label


def _after_plateau(found):
    """Margin (interquartile mean) after the plateau: at the end of the
    exploration phase (the switch) and at the last epoch, minus at the
    plateau; None without a plateau."""
    plateau = found["plateau_epoch"]
    epochs = found["epochs"]
    if plateau is None or plateau not in epochs:
        return None
    value = dict(zip(epochs, found["margin_mean_iqr"]))
    switch = found["exploration_epochs"]
    end = switch if switch in value else epochs[-1]
    return {"plateau": plateau, "until": end,
            "margin_at_plateau": value[plateau],
            "margin_at_until": value[end],
            "change_until": value[end] - value[plateau],
            "change_to_last": value[epochs[-1]] - value[plateau],
            "loss_change_until": (dict(zip(epochs, found["train_loss"]))[end]
                                  - dict(zip(epochs, found["train_loss"]))[plateau])}
