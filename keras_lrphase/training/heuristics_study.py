"""The SVCCA study of a comparison: the Heuristics paper's Figures 4c, 5 and 6.

After `compare` has trained a preset's runs, `write_similarity_outputs`
compares layer representations (`keras_lrphase.analysis.layer_similarity`,
SVCCA keeping 99% of each layer's variance) and writes, into the
comparison's folder:

* for each run with two or more `snapshot_epochs` (warmup): the network
  at the first snapshot (epoch 0, the initialisation) against the same
  network at the last (the end of warmup), every layer against every
  layer: `similarity_<run>.png` (Figure 5), and the diagonals of all these
  runs, each layer against itself, in `similarity_layers.png` (Figure 4c:
  1 means the layer's representation did not change);
* for each run distilled from another run of the comparison
  (`PresetRun.teacher`) whose `versus` run is the same student trained on
  the labels: the teacher's layers against each student's,
  `similarity_distilled.png` and `similarity_independent.png`, and their
  difference |CCA(T, S_distilled) - CCA(T, S_indep.)|,
  `similarity_difference.png` (Figure 6);
* `similarity.json` (every matrix, the layer names, the inputs) and
  `similarity.md` (the per-layer numbers, as printed).

The layers compared are the paper's "activation layers" (`study_layers`):
each convolution or Dense layer, read after its activation (past the batch
normalisation and pooling layers between them). (The raw output of
a first convolution is a linear map of the input patches, so its SVCCA
with the same convolution at any other weights is 1 whenever it has more
filters than its patches have values.)

Inputs: `images` test images drawn with a fixed seed, normalised with the
training set's channel statistics as in training, in inference mode. The
cost is bounded whatever the data: each model runs once over the images,
and `layer_similarity` keeps at most 10,000 data points per layer and
pooled size (about 20 s per run for `vgg-small` on a loaded 2-core CPU).
"""

import json
import os

import numpy as np

from keras_lrphase.analysis.layer_similarity import default_layers
from keras_lrphase.analysis.layer_similarity import layer_similarity
from keras_lrphase.analysis.similarity_plot import plot_layer_similarity

IMAGES = 1000
JSON_FILE = "similarity.json"
MARKDOWN_FILE = "similarity.md"
LAYERS_PLOT = "similarity_layers.png"


def analysis_images(data, count=IMAGES, seed=0):
    """`count` test images of `data`, normalised as the runner does.

    Args:
        data: `ImageData` (the comparison's data).
        count: Int. Number of images (all of them if fewer). Defaults to
            `IMAGES`.
        seed: Int. Seed of the draw. Defaults to `0`.

    Returns:
        A float32 array `(count, height, width, channels)`, in the order of
        the test set.

    Example:

    >>> from keras_lrphase.data import load_dataset
    >>> images = analysis_images(load_dataset("digits"), count=100)
    >>> images.shape, str(images.dtype)
    ((100, 8, 8, 1), 'float32')
    """
    from keras_lrphase.data import channel_stats
    from keras_lrphase.data import normalize_array

    mean, std = channel_stats(data.x_train)
    total = len(data.x_test)
    chosen = np.arange(total)
    if count < total:
        chosen = np.sort(np.random.default_rng(seed).choice(total, count,
                                                            replace=False))
    return np.asarray(normalize_array(data.x_test[chosen], mean, std),
                      dtype=np.float32)


def study_layers(model):
    """The layers whose outputs the study compares: the "activation layers".

    For each layer of `default_layers(model)` (convolutions and Dense):
    following the chain of batch normalisation, activation and pooling
    layers that directly follow it (each consuming the previous one's
    output), the last activation layer of the chain; the layer itself when
    the chain has none (a Dense layer with its own activation, logits).

    Args:
        model: A functional or Sequential `keras.Model`.

    Returns:
        List of layer names.

    Example:

    >>> from keras_lrphase.models import get_model
    >>> study_layers(get_model("vgg-small", (32, 32, 3), 10))
    ['relu1', 'relu2', 'relu3', 'relu4', 'fc1', 'fc2', 'logits']
    >>> study_layers(get_model("shallow-cnn", (32, 32, 3), 10))
    ['relu1', 'relu2', 'fc1', 'fc2', 'logits']
    """
    import keras

    following = (keras.layers.BatchNormalization, keras.layers.Activation,
                 keras.layers.ReLU, keras.layers.LeakyReLU,
                 keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    layers = list(model.layers)
    activations = (keras.layers.Activation, keras.layers.ReLU,
                   keras.layers.LeakyReLU)
    chosen = []
    for name in default_layers(model):
        i = next(k for k, layer in enumerate(layers) if layer.name == name)
        last = i
        while (i + 1 < len(layers) and isinstance(layers[i + 1], following)
               and _consumes(layers[i + 1], layers[i])):
            i += 1
            if isinstance(layers[i], activations):
                last = i
        chosen.append(layers[last].name)
    return chosen


def _consumes(layer, previous):
    try:
        return layer.input is previous.output
    except (AttributeError, ValueError):  # called several times, or never
        return False


def snapshot_model(config, data, path):
    """The model of a run (`config.model`) with the weights saved at `path`."""
    from keras_lrphase.models import get_model

    model = get_model(config.model, data.input_shape, data.num_classes,
                      weight_decay=config.weight_decay)
    model.load_weights(path)
    return model


def snapshot_similarity(config, folder, summary, data, images):
    """SVCCA of a run's network at its first and last weight snapshots.

    Args:
        config: The run's `RunConfig`.
        folder: String. The run's folder.
        summary: Dict. Its `summary.json` (`"snapshots"`: epoch -> file).
        data: Its `ImageData`.
        images: The inputs (`analysis_images`).

    Returns:
        Dict `epochs` (the two epochs), `layers`, `matrix` (rows: layers at
        the first epoch, columns: at the last), `diagonal` and
        `val_accuracy` (after the last epoch, from `history.csv`); or a
        string saying why there is none.
    """
    saved = {int(e): os.path.join(folder, p)
             for e, p in (summary.get("snapshots") or {}).items()}
    wanted = list(config.snapshot_epochs or ())
    if len(wanted) < 2:
        return "fewer than two snapshot epochs"
    first, last = wanted[0], wanted[-1]
    missing = [e for e in (first, last)
               if e not in saved or not os.path.isfile(saved[e])]
    if missing:
        return (f"no snapshot after epoch {missing[0]} (the run stopped "
                f"after {summary.get('epochs_completed')} epochs)")
    model_a = snapshot_model(config, data, saved[first])
    model_b = snapshot_model(config, data, saved[last])
    layers = study_layers(model_a)
    matrix = _similarity(model_a, model_b, images, layers, layers)
    if isinstance(matrix, str):
        return matrix
    return {"epochs": [first, last], "layers": layers, "matrix": matrix,
            "diagonal": np.diag(matrix),
            "val_accuracy": _val_accuracy(folder, last)}


def distillation_similarity(teacher_path, distilled_path, independent_path,
                            images):
    """The teacher's layers against a distilled and an independent student's.

    Args:
        teacher_path, distilled_path, independent_path: Strings. Saved
            models (`.keras`); the two students have the same architecture.
        images: The inputs (`analysis_images`).

    Returns:
        Dict `teacher_layers`, `student_layers`, `distilled` (rows: teacher
        layers, columns: student layers), `independent`, `difference`
        (`|distilled - independent|`) and `difference_by_student_layer`
        (its column means); or a string saying why there is none.
    """
    import keras

    for path in (teacher_path, distilled_path, independent_path):
        if not os.path.isfile(path):
            return f"no model file {path} (the run must set save_model)"
    teacher, distilled, independent = (
        keras.models.load_model(p, compile=False)
        for p in (teacher_path, distilled_path, independent_path))
    rows, columns = study_layers(teacher), study_layers(distilled)
    first = _similarity(teacher, distilled, images, rows, columns)
    if isinstance(first, str):
        return first
    second = _similarity(teacher, independent, images, rows, columns)
    if isinstance(second, str):
        return second
    difference = np.abs(first - second)
    return {"teacher_layers": rows, "student_layers": columns,
            "distilled": first, "independent": second,
            "difference": difference,
            "difference_by_student_layer": difference.mean(axis=0)}


def write_similarity_outputs(results, out, data_of, images=IMAGES):
    """Writes the heatmaps, `similarity.json` and `similarity.md` of a comparison.

    Args:
        results: List of `keras_lrphase.training.compare.RunGroup`, one
            per run, one summary and folder per seed (what `compare`
            tabulates).
        out: String. The comparison's folder.
        data_of: Callable `RunConfig -> ImageData`: the data of a run.
        images: Int. Number of test images. Defaults to `IMAGES`.

    Returns:
        The lines of `similarity.md` (one per analysis), to print.

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Sections 4 and
        5, Figures 4c, 5 and 6.
    """
    by_label = {group.run.label: group for group in results}
    seeds = max((len(group.summaries) for group in results), default=1)
    # Several distilled students: their heatmaps' names say whose.
    qualified = sum(len(group.summaries) for group in results
                    if group.run.teacher) > 1
    record = {"method": "svcca", "keep_variance": 0.99, "images": None,
              "warmup": {}, "distillation": {}}
    lines, diagonals, inputs = [], {}, {}

    def images_of(config):
        key = (config.dataset, config.data_dir, config.train_size,
               config.test_size)
        if key not in inputs:
            inputs[key] = analysis_images(data_of(config), images)
            record["images"] = int(len(inputs[key]))
        return inputs[key]

    for group in results:
        run, config = group.run, group.config
        for seed, (summary, folder) in enumerate(zip(group.summaries,
                                                     group.folders)):
            name = _name(run.label, summary, seeds)
            if config.snapshot_epochs and len(config.snapshot_epochs) > 1:
                found = snapshot_similarity(config, folder, summary,
                                            data_of(config), images_of(config))
                lines.append(_warmup_line(name, found))
                if isinstance(found, dict):
                    diagonals[name] = found
                    record["warmup"][name] = _listed(dict(
                        found, png=_warmup_heatmap(found, name, out)))
            versus = by_label.get(run.versus) if run.teacher else None
            if run.teacher and versus is None:
                lines.append(f"{name}: no {run.versus!r} run to compare the "
                             "distilled student with (its `versus`)")
            elif run.teacher:
                line, found = _distillation_outputs(
                    group, seed, versus, images_of(config), out, qualified,
                    seeds)
                lines.append(line)
                if found is not None:
                    record["distillation"][name] = found
    if diagonals:
        _plot_diagonals(diagonals, os.path.join(out, LAYERS_PLOT))
    with open(os.path.join(out, JSON_FILE), "w") as f:
        json.dump(record, f, indent=2, allow_nan=True)
        f.write("\n")
    with open(os.path.join(out, MARKDOWN_FILE), "w") as f:
        f.write("# Layer similarity (SVCCA)\n\n"
                + "".join(f"- {line}\n" for line in lines))
    return lines


# -- helpers -------------------------------------------------------------------
def _warmup_heatmap(found, name, out):
    """Writes a run's SVCCA heatmap between its two snapshots; its file name."""
    png = f"similarity_{_slug(name)}.png"
    first, last = found["epochs"]
    _save(plot_layer_similarity(
        found["matrix"], found["layers"], found["layers"],
        label_a=f"layer at epoch {first}",
        label_b=f"layer after epoch {last}",
        title=f"{name}: SVCCA, epoch {first} vs {last}"),
        os.path.join(out, png))
    return png


def _distillation_outputs(group, seed, versus, images, out, qualified, seeds):
    """`(line, record)` of one distilled student against its teacher and the
    independent run (`versus`) of the same seed (or its last); `record` is
    None when the similarity could not be computed."""
    run, config = group.run, group.config
    summary, folder = group.summaries[seed], group.folders[seed]
    name = _name(run.label, summary, seeds)
    teacher = (summary.get("teacher") or {}).get("path", config.teacher)
    independent = versus.folders[min(seed, len(versus.folders) - 1)]
    found = distillation_similarity(
        teacher, os.path.join(folder, "model.keras"),
        os.path.join(independent, "model.keras"), images)
    line = _distillation_line(name, run.versus, found)
    if not isinstance(found, dict):
        return line, None
    return line, _listed(dict(
        found, independent_run=_name(run.versus, summary, seeds),
        teacher_model=teacher,
        png=_distillation_plots(found, name, run.versus, out, qualified)))


def _similarity(model_a, model_b, images, layers_a, layers_b):
    if not all(np.all(np.isfinite(w)) for model in (model_a, model_b)
               for w in model.get_weights()):
        return "the weights are not finite (the run diverged)"
    return layer_similarity(model_a, model_b, images, layers_a=layers_a,
                            layers_b=layers_b)


def _val_accuracy(folder, epoch):
    from keras_lrphase.training.epoch_recorder import EpochRecorder

    path = os.path.join(folder, "history.csv")
    rows = EpochRecorder.read(path) if os.path.isfile(path) else []
    if epoch < 1 or epoch > len(rows):
        return None
    value = float(rows[epoch - 1]["val_accuracy"])
    return value if np.isfinite(value) else None


def _name(label, summary, seeds):
    if seeds > 1:
        return f"{label} (seed {summary['config']['seed']})"
    return label


def _slug(name):
    import re

    return re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-")


def _numbers(names, values):
    return ", ".join(f"{n} {v:.3f}" for n, v in zip(names, values))


def _warmup_line(name, found):
    if isinstance(found, str):
        return f"{name}: no heatmap: {found}"
    first, last = found["epochs"]
    accuracy = found["val_accuracy"]
    accuracy = "-" if accuracy is None else f"{100 * accuracy:.2f}%"
    return (f"{name}: validation accuracy after epoch {last} {accuracy}; "
            f"SVCCA of each layer at epoch {first} and after epoch {last}: "
            f"{_numbers(found['layers'], found['diagonal'])}")


def _distillation_line(name, versus, found):
    if isinstance(found, str):
        return f"{name}: no heatmap: {found}"
    return (f"{name} vs {versus}: mean |CCA(teacher, {name}) - CCA(teacher, "
            f"{versus})| per student layer: "
            f"{_numbers(found['student_layers'], found['difference_by_student_layer'])}")


def _distillation_plots(found, name, versus, out, qualified):
    suffix = f"_{_slug(name)}" if qualified else ""
    rows, columns = found["teacher_layers"], found["student_layers"]
    panels = (("distilled", found["distilled"], None,
               f"teacher vs {name}"),
              ("independent", found["independent"], None,
               f"teacher vs {versus}"),
              ("difference", found["distilled"], found["independent"],
               f"|CCA(T, {name}) - CCA(T, {versus})|"))
    written = {}
    for key, matrix, reference, title in panels:
        png = f"similarity_{key}{suffix}.png"
        _save(plot_layer_similarity(
            matrix, rows, columns, reference=reference, title=title,
            label_a="teacher layer",
            label_b=f"student layer ({name if key != 'independent' else versus})"),
            os.path.join(out, png))
        written[key] = png
    return written


def _plot_diagonals(diagonals, path):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for i, (name, found) in enumerate(diagonals.items()):
        axes.plot(range(len(found["layers"])), found["diagonal"], "o-",
                  color=f"C{i}", label=f"{name} (epoch {found['epochs'][0]} "
                  f"vs {found['epochs'][1]})")
    layers = next(iter(diagonals.values()))["layers"]
    axes.set_xticks(range(len(layers)), layers, rotation=45, fontsize=8)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("layer")
    axes.set_ylabel("SVCCA similarity with itself")
    axes.set_title("How much each layer changed (1: unchanged)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    _save(figure, path)


def _save(figure, path):
    figure.savefig(path, dpi=100)


def _listed(found):
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
            for k, v in found.items()}
