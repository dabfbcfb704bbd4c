"""`RunConfig`: everything one training run of the CLI is made of.

Importing this module imports no Keras (the command line builds its options
from it), and neither do `validate()` and `resolved()`: the command line
checks its options before it loads a backend.
"""

import dataclasses
import math
import os

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_positive
from keras_lrphase._validation import fail

SCHEDULES = ("step", "two-phase", "autodecay", "cosine", "cosine-restarts")
AUGMENTATIONS = ("auto", "none", "crop", "crop-flip")
PIPELINES = ("auto", "tf.data", "numpy", "device")
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}
# Distillation defaults (Gotmare et al. 2019, Section 5): the student learns
# the teacher's distribution softened with a temperature of 5.
DISTILL_ALPHA = 0.0
TEMPERATURE = 5.0
# The command line's options say "positive" where the library's arguments
# say "a finite number > 0" (`check_positive`).
_POSITIVE = "must be a positive number"
DEFAULT_MODELS = {
    "digits": "small-cnn",
    "cifar10": "resnet20",
    "cifar100": "wrn-28-10",
    "svhn": "wrn-16-8",
    "folder": "resnet20",
    "imagenet": "imagenet-resnet50",
}


@dataclasses.dataclass
class RunConfig:
    """One training configuration (the options of `keras-lrphase train`).

    `validate()` checks every field without touching data or building a
    model, so a bad configuration fails before any training; fields left at
    `None` take the documented defaults in `resolved()`.

    Attributes:
        dataset: String. One of `keras_lrphase.data.DATASET_NAMES`.
        data_dir: String or None. Image folder or TFDS data folder.
        cache_dir: String or None. Cache of decoded image folders.
        model: String or None. A `keras_lrphase.models` name; `None` picks
            the paper's model for the dataset (`DEFAULT_MODELS`).
        batch_size: Int. Examples per optimizer step.
        epochs: Int. Epoch budget.
        lr: Float. Peak learning rate (after warmup).
        momentum: Float in [0, 1). SGD/LARS momentum.
        weight_decay: Float >= 0. L2 coefficient on kernels (see
            `keras_lrphase.models.resnet.cifar_resnet`).
        schedule: `"step"`, `"two-phase"`, `"autodecay"`, `"cosine"` (Keras'
            `CosineDecay` to 0 over the epochs after the warmup, with the
            warmup as its `warmup_steps`) or `"cosine-restarts"`.
        decay_epochs: Tuple of ints or None. Step schedule: epochs after
            which the LR is multiplied by `decay_factor`; `None`: 50% and
            75% of `epochs` (the paper's 150/225 of 300).
        decay_factor: Float in (0, 1) or None. `None`: 0.1 for step and
            AutoDecay, 0.5 for two-phase.
        warmup_epochs: Int >= 0. Gradual linear warmup epochs.
        lars: Float or None. LARS trust coefficient; `None` for SGD.
        hessian_batch_size: Int or None. Examples of the one batch the
            Hessian eigenvalue is estimated on; `None`: the batch size,
            at least 1024, at most the training set.
        hessian_every: Int >= 0. Log the eigenvalue every so many epochs
            (all schedules); `0`: only where two-phase needs it.
        plateau_patience: Int or None. Two-phase patience; `None`: 5% of
            `epochs`.
        extra_epochs_fraction: Float >= 0. Two-phase alpha / n.
        min_delta: Float >= 0. Two-phase: least decrease of the epoch loss
            that counts as an improvement.
        plateau_rule: `"flat"`, `"paper"` or None. Two-phase plateau rule
            (see `TwoPhaseController`); `None`: `"flat"`.
        excursion_threshold: Float > 0 or None. Two-phase, plateau rule
            `"flat"`: relative rise above the best loss that makes an
            excursion; `None`: the controller's default.
        decay_rule: `"paper"`, `"significant"` or None. Two-phase decay
            rule; `None`: `"paper"`.
        decay_threshold: Float >= 0 or None. Two-phase, decay rule
            `"significant"`: rises must exceed this many typical
            epoch-to-epoch changes; `None`: the controller's default.
        min_factor: Float in [0, 1] or None. Two-phase: floor of the
            product of the decays (`0`: none, the paper's); `None`: the
            controller's default, 0.01. A `summary.json` without it (or
            with it at 0) names a run without a floor.
        restart_epochs: Int or None. Cosine restarts: first period in
            epochs; `None`: 10.
        restart_mult: Float >= 1. Cosine restarts: period multiplier.
        autodecay_window: Int >= 2 or None. AutoDecay: epochs of smoothed
            loss checked for stability; `None`: `AutoDecay`'s default.
        autodecay_tolerance: Float > 0 or None. AutoDecay: largest relative
            spread of a stable window; `None`: `AutoDecay`'s default.
        autodecay_drop_threshold: Float in (0, 1) or None. AutoDecay:
            largest smoothed-loss ratio that counts as a significant drop;
            `None`: `AutoDecay`'s default.
        momentum_correction: Bool. Rescale the momentum velocity by
            lr_new / lr_old at every learning-rate change between epochs
            (`MomentumCorrection`).
        stage_checkpoints: String or None. Folder where `StageCheckpoint`
            saves the model of every learning stage.
        accumulate: Int >= 1. Sub-batches per optimizer step
            (`gradient_accumulation_steps`).
        augment: `"auto"` (the dataset's choice), `"none"`, `"crop"` or
            `"crop-flip"`.
        pipeline: `"auto"` (`"tf.data"` when TensorFlow is installed, else
            `"numpy"`), `"tf.data"` (`keras_lrphase.data.train_dataset`) or
            `"numpy"` (`keras_lrphase.data.TrainBatches`, every backend,
            the same augmentation stream on each) or `"device"`
            (`keras_lrphase.data.DeviceTrainBatches`: the same batches,
            made on the accelerator from a training set kept there; JAX
            and torch).
        precision: `"fp32"` or `"bf16"` (Keras policy `mixed_bfloat16`:
            bfloat16 compute, float32 weights).
        train_size: Int or None. Class-balanced training subset size (the
            same images whatever the seed).
        test_size: Int or None. Class-balanced test subset size.
        eval_batch_size: Int. Batch size of validation.
        validation_freq: Int >= 1. Validate every so many epochs, and
            always at the last (Keras' `fit(validation_freq=...)`, given
            the list of those epochs); the other epochs' `val_*` cells are
            empty. Defaults to `1`.
        seed: Int. Random seed (weights, shuffling, augmentation, the
            Hessian batch).
        name: String or None. Label of the run (in `compare`).
        teacher: String or None. Path of a saved Keras model (`.keras`)
            mapping the dataset's (normalised) images to its class logits:
            `model` is then trained as its student by distillation
            (`keras_lrphase.training.distillation`); `None` trains on the
            labels alone.
        distill_alpha: Float in [0, 1] or None. With `teacher`: the weight
            of the hard-label loss (the distillation loss gets
            `1 - distill_alpha`); `None`: 0.0 (the Heuristics paper trains
            the student on the teacher's softened distribution).
        temperature: Float > 0 or None. With `teacher`: the softmax
            temperature of the distillation; `None`: 5.0 (the paper's).
        image_size: Int >= 8 or None. `dataset="imagenet"` only: side of
            the square crops the model sees; `None`: 224 (the paper's).
            Training images are resized to a shorter side in [8/7, 12/7] x
            `image_size` (256-384 at 224), validation images to 8/7 x
            `image_size` (`keras_lrphase.data.imagenet_preprocessing`).
        freeze_epochs: Int in [0, epochs]. Keep the model's trailing stack
            of Dense layers (the fully-connected stack) frozen for this
            many epochs from the first (`FreezeLayers`), the Heuristics
            paper's substitute for warmup; `0`: no freeze.
        snapshot_epochs: Tuple of ints in [0, epochs] or None. Save the
            model's weights (a distilled model's student) after each of
            these epochs to `<run folder>/snapshots/epoch{N}.weights.h5`;
            `0` is the initialisation, before the first step
            (`WeightSnapshots`). `None`: no snapshot.
        save_model: Bool. Save the trained model (a distilled model's
            student) to `<run folder>/model.keras` at the end of the run,
            e.g. to serve as another run's teacher.
    """

    dataset: str = "digits"
    data_dir: str = None
    cache_dir: str = None
    model: str = None
    batch_size: int = 128
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    decay_epochs: tuple = None
    decay_factor: float = None
    warmup_epochs: int = 0
    lars: float = None
    hessian_batch_size: int = None
    hessian_every: int = 1
    plateau_patience: int = None
    extra_epochs_fraction: float = 1 / 3
    min_delta: float = 0.0
    plateau_rule: str = None
    excursion_threshold: float = None
    decay_rule: str = None
    decay_threshold: float = None
    min_factor: float = None
    restart_epochs: int = None
    restart_mult: float = 2.0
    autodecay_window: int = None
    autodecay_tolerance: float = None
    autodecay_drop_threshold: float = None
    momentum_correction: bool = False
    stage_checkpoints: str = None
    accumulate: int = 1
    augment: str = "auto"
    pipeline: str = "auto"
    precision: str = "fp32"
    train_size: int = None
    test_size: int = None
    eval_batch_size: int = 500
    validation_freq: int = 1
    seed: int = 0
    name: str = None
    teacher: str = None
    distill_alpha: float = None
    temperature: float = None
    image_size: int = None
    freeze_epochs: int = 0
    snapshot_epochs: tuple = None
    save_model: bool = False

    def validate(self, check_data=True):
        """Raises `ValueError` (one line, naming the option) on bad values.

        Args:
            check_data: Bool. Also check the dataset name and data folder
                layout (cheap: no decoding). Defaults to `True`.

        Returns:
            `self`.
        """
        from keras_lrphase.data import DATASET_NAMES
        from keras_lrphase.data import check_dataset
        from keras_lrphase.models import MODEL_NAMES
        from keras_lrphase.models import is_model_name

        if self.dataset not in DATASET_NAMES:
            fail("dataset", self.dataset,
                 f"must be one of {', '.join(DATASET_NAMES)}")
        if self.model is not None and not is_model_name(self.model):
            fail("model", self.model,
                 f"must be one of {', '.join(MODEL_NAMES)} (or any "
                 "resnet{6n+2} / wrn-{6n+4}-{k})")
        self._validate_sizes()
        self._validate_optimizer()
        self._validate_schedule()
        self._validate_options()
        self._validate_distillation()
        self._validate_outputs()
        if self.image_size is not None:
            if self.dataset != "imagenet":
                fail("image_size", self.image_size,
                     "is only used by dataset='imagenet'")
            check_integer("image_size", self.image_size, 8)
        if self.dataset == "imagenet" and self.pipeline in ("numpy", "device"):
            fail("pipeline", self.pipeline,
                 "must be 'tf.data' or 'auto' for dataset='imagenet' (it "
                 "streams its images from files)")
        if check_data:
            check_dataset(self.dataset, self.data_dir)
        return self

    def _validate_sizes(self):
        check_integer("batch_size", self.batch_size, 1)
        check_integer("epochs", self.epochs, 1)
        check_integer("warmup_epochs", self.warmup_epochs, 0)
        check_integer("accumulate", self.accumulate, 1)
        check_integer("eval_batch_size", self.eval_batch_size, 1)
        check_integer("hessian_every", self.hessian_every, 0)
        check_integer("validation_freq", self.validation_freq, 1)
        check_integer("seed", self.seed, 0)
        for name in ("hessian_batch_size", "plateau_patience",
                     "restart_epochs", "train_size", "test_size"):
            if getattr(self, name) is not None:
                check_integer(name, getattr(self, name), 1)
        if self.batch_size % self.accumulate:
            raise ValueError(
                "Argument `batch_size` must be divisible by `accumulate`. "
                f"Received: batch_size={self.batch_size}, "
                f"accumulate={self.accumulate}"
            )
        if self.epochs < self.warmup_epochs:
            raise ValueError(
                "Argument `epochs` must be at least `warmup_epochs`. "
                f"Received: epochs={self.epochs}, "
                f"warmup_epochs={self.warmup_epochs}"
            )

    def _validate_optimizer(self):
        check_positive("lr", self.lr, _POSITIVE)
        if not 0.0 <= self.momentum < 1.0:
            fail("momentum", self.momentum, "must be in [0, 1)")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            fail("weight_decay", self.weight_decay, "must be >= 0")
        if self.lars is not None:
            check_positive("lars", self.lars, _POSITIVE)

    def _validate_schedule(self):
        if self.schedule not in SCHEDULES:
            fail("schedule", self.schedule,
                 f"must be one of {', '.join(SCHEDULES)}")
        if self.decay_factor is not None:
            if self.schedule.startswith("cosine"):
                fail("decay_factor", self.decay_factor,
                     f"is not used by schedule={self.schedule!r}")
            if not 0.0 < self.decay_factor < 1.0:
                fail("decay_factor", self.decay_factor, "must be in (0, 1)")
        if self.decay_epochs is not None:
            if self.schedule != "step":
                fail("decay_epochs", self.decay_epochs,
                     f"is only used by schedule='step' (schedule="
                     f"{self.schedule!r})")
            epochs = tuple(self.decay_epochs)
            # Empty: no decay (what `resolved()` gives a budget under 2).
            if epochs and (any(not isinstance(e, int) for e in epochs)
                           or list(epochs) != sorted(set(epochs))
                           or epochs[0] < 1 or epochs[-1] >= self.epochs):
                fail("decay_epochs", ",".join(map(str, epochs)),
                     f"must be increasing integers in [1, {self.epochs - 1}]")
        if self.schedule != "two-phase":
            for name, default in (("plateau_patience", None),
                                  ("extra_epochs_fraction", 1 / 3),
                                  ("min_delta", 0.0), ("plateau_rule", None),
                                  ("excursion_threshold", None),
                                  ("decay_rule", None),
                                  ("decay_threshold", None),
                                  ("min_factor", None)):
                if getattr(self, name) != default:
                    fail(name, getattr(self, name),
                         "is only used by schedule='two-phase'")
        self._validate_two_phase_rules()
        if not self.min_delta >= 0.0:
            fail("min_delta", self.min_delta, "must be >= 0")
        if not self.extra_epochs_fraction >= 0.0:
            fail("extra_epochs_fraction", self.extra_epochs_fraction,
                 "must be >= 0")
        if self.schedule != "cosine-restarts" and self.restart_epochs is not None:
            fail("restart_epochs", self.restart_epochs,
                 "is only used by schedule='cosine-restarts'")
        if not self.restart_mult >= 1.0:
            fail("restart_mult", self.restart_mult, "must be >= 1")
        autodecay = (("autodecay_window", self.autodecay_window),
                     ("autodecay_tolerance", self.autodecay_tolerance),
                     ("autodecay_drop_threshold", self.autodecay_drop_threshold))
        for name, value in autodecay:
            if value is not None and self.schedule != "autodecay":
                fail(name, value, "is only used by schedule='autodecay'")
        if self.autodecay_window is not None:
            check_integer("autodecay_window", self.autodecay_window, 2)
        if self.autodecay_tolerance is not None:
            check_positive("autodecay_tolerance", self.autodecay_tolerance,
                           _POSITIVE)
        if self.autodecay_drop_threshold is not None and not (
                0.0 < self.autodecay_drop_threshold < 1.0):
            fail("autodecay_drop_threshold", self.autodecay_drop_threshold,
                 "must be in (0, 1)")

    def _validate_options(self):
        from keras_lrphase.backend import tensorflow_installed

        if not isinstance(self.momentum_correction, bool):
            fail("momentum_correction", self.momentum_correction,
                 "must be True or False")
        if self.momentum_correction and self.momentum == 0.0:
            fail("momentum_correction", self.momentum_correction,
                 "needs momentum > 0 (there is no velocity to correct)")
        if self.stage_checkpoints is not None and not (
                isinstance(self.stage_checkpoints, str) and self.stage_checkpoints):
            fail("stage_checkpoints", self.stage_checkpoints,
                 "must be a folder path or None")
        if self.augment not in AUGMENTATIONS:
            fail("augment", self.augment,
                 f"must be one of {', '.join(AUGMENTATIONS)}")
        if self.pipeline not in PIPELINES:
            fail("pipeline", self.pipeline,
                 f"must be one of {', '.join(PIPELINES)}")
        if self.pipeline == "tf.data" and not tensorflow_installed():
            fail("pipeline", self.pipeline,
                 "needs TensorFlow (pip install tensorflow), or use "
                 "pipeline='numpy'")
        if self.pipeline == "device" and _backend() == "tensorflow":
            fail("pipeline", self.pipeline,
                 "needs the JAX or torch backend (TensorFlow's trainer copies "
                 "such batches through the host; its accelerator path is "
                 "pipeline='tf.data')")
        if self.precision not in PRECISIONS:
            fail("precision", self.precision,
                 f"must be one of {', '.join(PRECISIONS)}")

    def _validate_distillation(self):
        if self.teacher is None:
            for name in ("distill_alpha", "temperature"):
                if getattr(self, name) is not None:
                    fail(name, getattr(self, name), "is only used with `teacher`")
            return
        if not isinstance(self.teacher, str) or not os.path.isfile(self.teacher):
            fail("teacher", self.teacher,
                 "must be an existing model file (.keras)")
        if self.distill_alpha is not None and not (
                isinstance(self.distill_alpha, (int, float))
                and not isinstance(self.distill_alpha, bool)
                and 0.0 <= self.distill_alpha <= 1.0):
            fail("distill_alpha", self.distill_alpha, "must be in [0, 1]")
        if self.temperature is not None:
            check_positive("temperature", self.temperature, _POSITIVE)

    def _validate_two_phase_rules(self):
        from keras_lrphase.controllers.two_phase_controller import DECAY_RULES
        from keras_lrphase.controllers.two_phase_controller import FLAT
        from keras_lrphase.controllers.two_phase_controller import PLATEAU_RULES
        from keras_lrphase.controllers.two_phase_controller import SIGNIFICANT

        if self.plateau_rule is not None and self.plateau_rule not in PLATEAU_RULES:
            fail("plateau_rule", self.plateau_rule,
                 f"must be one of {', '.join(PLATEAU_RULES)}")
        if self.decay_rule is not None and self.decay_rule not in DECAY_RULES:
            fail("decay_rule", self.decay_rule,
                 f"must be one of {', '.join(DECAY_RULES)}")
        if self.excursion_threshold is not None:
            if self.plateau_rule not in (None, FLAT):
                fail("excursion_threshold", self.excursion_threshold,
                     f"is only used by plateau_rule='{FLAT}'")
            check_positive("excursion_threshold", self.excursion_threshold,
                           _POSITIVE)
        if self.decay_threshold is not None:
            if self.decay_rule not in (None, SIGNIFICANT):
                fail("decay_threshold", self.decay_threshold,
                     f"is only used by decay_rule='{SIGNIFICANT}'")
            if not (isinstance(self.decay_threshold, (int, float))
                    and math.isfinite(self.decay_threshold)
                    and self.decay_threshold >= 0):
                fail("decay_threshold", self.decay_threshold, "must be >= 0")

        if self.min_factor is not None and not (
                isinstance(self.min_factor, (int, float))
                and 0 <= self.min_factor <= 1):
            fail("min_factor", self.min_factor, "must be in [0, 1]")

    def _validate_outputs(self):
        check_integer("freeze_epochs", self.freeze_epochs, 0)
        if self.freeze_epochs > self.epochs:
            raise ValueError(
                "Argument `freeze_epochs` must be at most `epochs`. "
                f"Received: freeze_epochs={self.freeze_epochs}, "
                f"epochs={self.epochs}"
            )
        if self.snapshot_epochs is not None:
            epochs = self.snapshot_epochs
            if (not isinstance(epochs, (tuple, list)) or not epochs
                    or any(isinstance(e, bool) or not isinstance(e, int)
                           for e in epochs)
                    or list(epochs) != sorted(set(epochs))
                    or epochs[0] < 0 or epochs[-1] > self.epochs):
                shown = (",".join(map(str, epochs))
                         if isinstance(epochs, (tuple, list)) else epochs)
                fail("snapshot_epochs", shown,
                     f"must be increasing integers in [0, {self.epochs}]")
        if not isinstance(self.save_model, bool):
            fail("save_model", self.save_model, "must be True or False")

    def resolved(self):
        """A copy with the `None` defaults filled in (data-independent ones)."""
        from keras_lrphase.backend import tensorflow_installed

        values = dataclasses.asdict(self)
        if values["model"] is None:
            values["model"] = DEFAULT_MODELS[self.dataset]
        if values["decay_factor"] is None and not self.schedule.startswith("cosine"):
            values["decay_factor"] = 0.5 if self.schedule == "two-phase" else 0.1
        if values["decay_epochs"] is None and self.schedule == "step":
            values["decay_epochs"] = default_decay_epochs(self.epochs)
        if values["decay_epochs"] is not None:
            values["decay_epochs"] = tuple(values["decay_epochs"])
        if values["snapshot_epochs"] is not None:
            values["snapshot_epochs"] = tuple(values["snapshot_epochs"])
        if values["pipeline"] == "auto":
            values["pipeline"] = "tf.data" if tensorflow_installed() else "numpy"
        if self.schedule == "two-phase":
            from keras_lrphase.controllers import two_phase_controller as tp

            if values["plateau_rule"] is None:
                values["plateau_rule"] = tp.FLAT
            if values["decay_rule"] is None:
                values["decay_rule"] = tp.PAPER
            if (values["excursion_threshold"] is None
                    and values["plateau_rule"] == tp.FLAT):
                values["excursion_threshold"] = tp.DEFAULT_EXCURSION_THRESHOLD
            if (values["decay_threshold"] is None
                    and values["decay_rule"] == tp.SIGNIFICANT):
                values["decay_threshold"] = tp.DEFAULT_DECAY_THRESHOLD
            if values["min_factor"] is None:
                values["min_factor"] = tp.DEFAULT_MIN_FACTOR
        if values["restart_epochs"] is None and self.schedule == "cosine-restarts":
            values["restart_epochs"] = 10
        if self.teacher is not None:
            if values["distill_alpha"] is None:
                values["distill_alpha"] = DISTILL_ALPHA
            if values["temperature"] is None:
                values["temperature"] = TEMPERATURE
        if values["image_size"] is None and self.dataset == "imagenet":
            from keras_lrphase.data.imagenet_preprocessing import IMAGE_SIZE

            values["image_size"] = IMAGE_SIZE
        return RunConfig(**values)

    def to_dict(self):
        """JSON-serialisable dict of the fields.

        The output fields `freeze_epochs`, `snapshot_epochs`, `save_model`
        and `validation_freq` are left out at their defaults, so the `summary.json`
        of a run finished before they existed still names its
        configuration (`compare` keeps it).
        """
        # NumPy scalars (which `validate` accepts, as the library's
        # arguments do) are written as the Python numbers they hold.
        values = {name: value.item() if type(value).__module__ == "numpy"
                  else value for name, value in dataclasses.asdict(self).items()}
        if values["decay_epochs"] is not None:
            values["decay_epochs"] = list(values["decay_epochs"])
        if values["snapshot_epochs"] is not None:
            values["snapshot_epochs"] = list(values["snapshot_epochs"])
        for name, default in _OUTPUT_DEFAULTS:
            if values[name] == default:
                del values[name]
        # No floor on the two-phase decays (0, or a run of another schedule)
        # is written as no field, as before the field existed.
        if values["min_factor"] in (None, 0):
            del values["min_factor"]
        return values


    def matches(self, saved):
        """Whether `saved`, a `to_dict()` from a file, names this configuration.

        A field missing on either side counts as its default: a
        `summary.json` or checkpoint written before a field existed (or
        with a field `to_dict` leaves out at its default) still names the
        same run, so an upgrade of the package does not retrain it. A key
        that is not a field never matches. The `numpy` and `device`
        pipelines make the same batches, so a run may resume on the other.

        Example:

        >>> config = RunConfig(epochs=3)
        >>> saved = config.to_dict(); del saved["teacher"]  # an older file
        >>> config.matches(saved), RunConfig(epochs=4).matches(saved)
        (True, False)
        """
        return isinstance(saved, dict) and not self.differences(saved)

    def differences(self, saved):
        """The fields where `saved` (a `to_dict()` from a file) differs.

        Read as `matches` reads them. Returns a sorted list of
        `(name, saved_value, this_value)`; a key of `saved` that is not a
        field has `this_value` None.

        Example:

        >>> saved = RunConfig(epochs=3, lr=0.1).to_dict()
        >>> RunConfig(epochs=4, lr=0.1).differences(saved)
        [('epochs', 3, 4)]
        """
        fields = {f.name: f for f in dataclasses.fields(self)}
        mine = self.to_dict()
        found = []
        for name in sorted(set(mine) | set(saved)):
            if name not in fields:
                found.append((name, saved[name], None))
                continue
            default = _json_default_of(fields[name])
            values = mine.get(name, default), saved.get(name, default)
            same = _SAME_BATCHES.get(name, {})
            mine_value, saved_value = (same.get(v, v) if isinstance(v, str)
                                       else v for v in values)
            if mine_value != saved_value:
                found.append((name, values[1], values[0]))
        return found


def _json_default_of(field):
    """A dataclass field's default as `to_dict` writes it (tuples as lists)."""
    default = field.default
    return list(default) if isinstance(default, tuple) else default


# Values that train identically: the device pipeline makes the numpy one's
# batches on the accelerator.
_SAME_BATCHES = {"pipeline": {"device": "numpy"}}

# Fields `to_dict` leaves out at their defaults (added after runs existed).
_OUTPUT_DEFAULTS = (("freeze_epochs", 0), ("snapshot_epochs", None),
                    ("save_model", False), ("validation_freq", 1))


def default_decay_epochs(epochs):
    """50% and 75% of the budget (150 and 225 of 300), distinct and >= 1."""
    first = max(1, int(round(0.5 * epochs)))
    second = int(round(0.75 * epochs))
    if epochs < 3:
        return (first,) if first < epochs else ()
    return (first, second) if second > first else (first,)


def _backend():
    from keras_lrphase.backend import configured_backend

    return configured_backend()


def validation_epochs(config):
    """The epochs (from 1) `config` validates in: every
    `validation_freq`-th and the last, as Keras' `fit(validation_freq=...)`
    takes them (`1`: every epoch).

    Example:

    >>> validation_epochs(RunConfig(epochs=7, validation_freq=3))
    [3, 6, 7]
    >>> validation_epochs(RunConfig(epochs=7))
    1
    """
    if config.validation_freq == 1:
        return 1
    return sorted(set(range(config.validation_freq, config.epochs + 1,
                            config.validation_freq)) | {config.epochs})
