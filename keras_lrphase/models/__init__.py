"""Models of the paper's experiments, and a name registry for the CLI.

Names understood by `get_model`:

* `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110` (any
  `resnet{6n+2}`): the CIFAR ResNets of He et al. (option-A shortcuts);
* `wrn-16-8`, `wrn-28-10` (any `wrn-{depth}-{width}`): wide ResNets; WRN-16-8
  gets dropout 0.5 (the paper's SVHN setting) unless `dropout` is passed;
* `small-cnn`: the small CNN of the offline demo;
* `vgg-small`: a small VGG (4 convolutions, a stack of 3 Dense layers), the
  Heuristics paper's VGG-11 in miniature (`heuristics-*` presets);
* `shallow-cnn`: the Heuristics paper's distillation student
  (`[conv, maxpool, relu] x 2, fc, relu, fc, fc`);
* `imagenet-resnet50`: the bottleneck ResNet-50 for ImageNet, with the
  two-phase paper's zero-initialised last gamma of each block and
  regularised head bias (`resnet50` is the CIFAR ResNet of depth 50).

The builders are imported on first use (PEP 562): `MODEL_NAMES` and
`is_model_name`, which the command line checks its options with, load
without Keras.
"""

import importlib
import re

# Imported on first use: these import Keras.
_BUILDERS = {
    "imagenet_resnet50": "keras_lrphase.models.imagenet_resnet",
    "cifar_resnet": "keras_lrphase.models.resnet",
    "resnet20": "keras_lrphase.models.resnet",
    "shallow_cnn": "keras_lrphase.models.shallow_cnn",
    "small_cnn": "keras_lrphase.models.small",
    "small_vgg": "keras_lrphase.models.vgg",
    "wide_resnet": "keras_lrphase.models.wide_resnet",
}


def __getattr__(name):
    if name not in _BUILDERS:
        raise AttributeError(
            f"module 'keras_lrphase.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_BUILDERS[name]), name)
    globals()[name] = value
    return value


MODEL_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
               "wrn-16-8", "wrn-28-10", "small-cnn", "vgg-small", "shallow-cnn",
               "imagenet-resnet50")

_RESNET = re.compile(r"^resnet(\d+)$")
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")


def get_model(name, input_shape, num_classes, weight_decay=0.0, **kwargs):
    """Builds a model of the package by name.

    Args:
        name: String. One of `MODEL_NAMES`, or any `resnet{6n+2}` or
            `wrn-{6n+4}-{k}`.
        input_shape: Tuple of ints. Image shape `(height, width, channels)`.
        num_classes: Int. Number of output logits.
        weight_decay: Float. L2 coefficient (gradient term `lambda * w`).
            Defaults to `0.0`.
        **kwargs: Passed to the builder (`shortcut` for ResNets, `dropout`
            for wide ResNets, `filters` for `small-cnn` and `shallow-cnn`,
            `blocks` and `dense` for `vgg-small`, `zero_init_residual` for
            `imagenet-resnet50`).

    Returns:
        A `keras.Model` whose last layer, `"logits"`, outputs logits.

    Example:

    >>> get_model("resnet20", (32, 32, 3), 10).count_params()
    271098
    """
    if not is_model_name(name):
        raise ValueError(
            f"Argument `name` must be one of {', '.join(MODEL_NAMES)} (or any "
            f"resnet{{6n+2}} / wrn-{{6n+4}}-{{k}}). Received: name={name!r}"
        )
    if name == "imagenet-resnet50":
        return __getattr__("imagenet_resnet50")(input_shape, num_classes,
                                                weight_decay, **kwargs)
    match = _RESNET.match(name)
    if match:
        return __getattr__("cifar_resnet")(
            int(match.group(1)), input_shape, num_classes, weight_decay,
            **kwargs)
    match = _WRN.match(name)
    if match:
        depth, width = int(match.group(1)), int(match.group(2))
        if name == "wrn-16-8":
            kwargs.setdefault("dropout", 0.5)
        return __getattr__("wide_resnet")(
            depth, width, input_shape=input_shape, num_classes=num_classes,
            weight_decay=weight_decay, **kwargs)
    if name == "vgg-small":
        return __getattr__("small_vgg")(input_shape, num_classes,
                                        weight_decay, **kwargs)
    if name == "shallow-cnn":
        return __getattr__("shallow_cnn")(input_shape, num_classes,
                                          weight_decay, **kwargs)
    return __getattr__("small_cnn")(input_shape, num_classes, weight_decay,
                                    **kwargs)


def is_model_name(name):
    """Whether `get_model` knows `name` (checked without building anything)."""
    if not isinstance(name, str):
        return False
    match = _RESNET.match(name)
    if match:
        depth = int(match.group(1))
        return depth >= 8 and (depth - 2) % 6 == 0
    match = _WRN.match(name)
    if match:
        depth, width = int(match.group(1)), int(match.group(2))
        return depth >= 10 and (depth - 4) % 6 == 0 and width >= 1
    return name in ("small-cnn", "vgg-small", "shallow-cnn",
                    "imagenet-resnet50")


__all__ = ["MODEL_NAMES", "cifar_resnet", "get_model", "imagenet_resnet50",
           "is_model_name",
           "resnet20", "shallow_cnn", "small_cnn", "small_vgg", "wide_resnet"]
