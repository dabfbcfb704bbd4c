"""Every Keras object the package can put in a saved model is registered,
and its config makes the same object again."""

import ast
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lrphase
from keras_lrphase.distributed.distributed_optimizer import DistributedOptimizer
from keras_lrphase.models import RegularizedDistiller
from keras_lrphase.models import build_distiller
from keras_lrphase.models import get_model
from keras_lrphase.models.resnet import ZeroPadShortcut
from keras_lrphase.models.resnet import resnet20
from keras_lrphase.models.wide_resnet import wide_resnet
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
from keras_lrphase.schedules.scaled_learning_rate import ScaledLearningRate

pytestmark = pytest.mark.backend_neutral

# Kinds of Keras objects a saved model's config can name.
SAVEABLE = (keras.layers.Layer, keras.optimizers.Optimizer,
            keras.optimizers.schedules.LearningRateSchedule,
            keras.regularizers.Regularizer, keras.constraints.Constraint,
            keras.initializers.Initializer, keras.losses.Loss,
            keras.metrics.Metric)
# The application layer (see scripts/check_architecture.py): not library.
APPLICATION = ("keras_lrphase.training", "keras_lrphase.cli",
               "keras_lrphase.presets", "keras_lrphase.analyze_command",
               "keras_lrphase.analysis.analyze_actions",
               "keras_lrphase.__main__")


def _library_classes():
    found = {}
    for info in pkgutil.walk_packages(keras_lrphase.__path__,
                                      "keras_lrphase."):
        if info.name.startswith(APPLICATION):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (Horovod, ...)
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == info.name
                    and issubclass(value, SAVEABLE)):
                found[f"{info.name}.{value.__name__}"] = value
    return found


def test_every_saveable_class_of_the_library_is_registered():
    classes = _library_classes()
    # The walk finds the package's saveable classes (and none is missed
    # because its module failed to import).
    assert {"keras_lrphase.models.resnet.ZeroPadShortcut",
            "keras_lrphase.optimizers.lars.LARS",
            "keras_lrphase.optimizers.lars_wrapper.LARSWrapper",
            "keras_lrphase.distributed.distributed_optimizer."
            "DistributedOptimizer"} <= set(classes)
    if RegularizedDistiller is not None:
        # A keras.Model subclass: saved models name it too.
        classes["keras_lrphase.models.distiller.RegularizedDistiller"] = (
            RegularizedDistiller)
    unregistered = sorted(
        name for name, cls in classes.items()
        if keras.saving.get_registered_name(cls)
        != f"keras_lrphase>{cls.__name__}")
    assert unregistered == []
    # `import keras_lrphase` imports each of their modules (which registers
    # the classes), so that a saved model loads after it.
    tree = ast.parse(inspect.getsource(keras_lrphase._register_serializables))
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    assert sorted({cls.__module__ for cls in classes.values()} - imported) == []


def _round_trip(obj):
    """serialize -> JSON -> deserialize, as `model.save`/`load_model` do."""
    text = json.dumps(keras.saving.serialize_keras_object(obj))
    return keras.saving.deserialize_keras_object(json.loads(text))


def test_zero_pad_shortcut_config_round_trip():
    layer = ZeroPadShortcut(8, strides=2, name="short")
    again = _round_trip(layer)
    assert type(again) is ZeroPadShortcut
    assert again.get_config() == layer.get_config()
    x = np.arange(2 * 4 * 4 * 4, dtype="float32").reshape(2, 4, 4, 4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(x)),
                                  keras.ops.convert_to_numpy(layer(x)))


def test_lars_config_round_trip():
    optimizer = LARS(0.3, momentum=0.8, weight_decay=1e-3,
                     trust_coefficient=0.01, nesterov=True)
    again = _round_trip(optimizer)
    assert type(again) is LARS
    assert again.get_config() == optimizer.get_config()


def test_lars_wrapper_config_round_trip():
    optimizer = LARSWrapper(keras.optimizers.SGD(0.2, momentum=0.9),
                            trust_coefficient=0.02)
    again = _round_trip(optimizer)
    assert type(again) is LARSWrapper
    # On torch the inner SGD is Keras' torch subclass of keras.optimizers.SGD.
    assert isinstance(again.inner_optimizer, keras.optimizers.SGD)
    assert again.get_config() == optimizer.get_config()


def test_distributed_optimizer_config_round_trip():
    optimizer = DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.5))
    again = _round_trip(optimizer)
    assert type(again) is DistributedOptimizer
    assert again.get_config() == optimizer.get_config()


def test_scaled_learning_rate_config_restores_the_rate_in_force():
    if keras.backend.backend() == "torch":
        pytest.skip("on torch an integer variable of the round trip asks for "
                    "gradients (known open defect)")
    # A saved model's optimizer gets the plain learning rate in force: on a
    # float base, base * scale (the factors are the package's state).
    # Integer variables are not trainable (torch refuses gradients on them).
    step = keras.Variable(0, dtype="int64", trainable=False)
    zero = keras.Variable(0.0)
    scaled = ScaledLearningRate(keras.Variable(0.4), step, keras.Variable(0.5),
                                keras.Variable(0, trainable=False), zero)
    assert _round_trip(scaled) == pytest.approx(0.2)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.4, 10, 0.5)
    scaled = ScaledLearningRate(schedule, step, keras.Variable(1.0),
                                keras.Variable(0), zero)
    again = _round_trip(scaled)
    assert type(again) is keras.optimizers.schedules.ExponentialDecay
    assert again.get_config() == schedule.get_config()


def test_regularized_distiller_config_round_trip():
    if RegularizedDistiller is None:
        pytest.skip("keras.distillation needs Keras >= 3.12")
    teacher = get_model("small-cnn", (8, 8, 1), 10)
    student = get_model("small-cnn", (8, 8, 1), 10)
    distiller = build_distiller(teacher, student, 0.25, 3.0)
    again = _round_trip(distiller)
    assert type(again) is RegularizedDistiller
    assert again.student_loss_weight == pytest.approx(0.25)
    assert again.distillation_losses[0].temperature == pytest.approx(3.0)


LOAD_WITHOUT_PACKAGE = """
import json, sys
import numpy as np
import keras
x = np.load(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    model = keras.models.load_model(path)
    out[path] = keras.ops.convert_to_numpy(model(x, training=False)).tolist()
print(json.dumps([out, "keras_lrphase" in sys.modules]))
"""


def test_saved_models_load_in_a_fresh_process(tmp_path):
    # Models built from Keras' own layers load without the package;
    # option-A ResNets hold ZeroPadShortcut, which loads once the package
    # is imported (it registers the layer).
    keras.utils.set_random_seed(0)
    builders = {
        "resnet20-b": lambda: resnet20((16, 16, 3), shortcut="B"),
        "wrn-10-1": lambda: wide_resnet(10, 1, input_shape=(16, 16, 3)),
        "small-cnn": lambda: get_model("small-cnn", (16, 16, 3), 10),
        "vgg-small": lambda: get_model("vgg-small", (16, 16, 3), 10),
        "shallow-cnn": lambda: get_model("shallow-cnn", (16, 16, 3), 10),
        "resnet20-a": lambda: resnet20((16, 16, 3)),
    }
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for name, build in builders.items():
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        expected[path] = keras.ops.convert_to_numpy(model(x, training=False))
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_PACKAGE)
    plain = [p for p in expected if not p.endswith("resnet20-a.keras")]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the package is not importable at all
    for paths, prelude, imported in (
            (plain, None, False),
            ([p for p in expected if p not in plain], "keras_lrphase", True)):
        command = [sys.executable, str(script), str(tmp_path / "x.npy")]
        run_env = env
        if prelude:
            # The same script, after `import keras_lrphase`.
            command = [sys.executable, "-c",
                       f"import {prelude}, runpy, sys; "
                       f"sys.argv = sys.argv[1:]; "
                       f"runpy.run_path(sys.argv[0], run_name='__main__')",
                       str(script), str(tmp_path / "x.npy")]
            run_env = dict(os.environ)
        out = subprocess.run(command + paths, capture_output=True, text=True,
                             timeout=300, env=run_env,
                             cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        loaded, package_imported = json.loads(out.stdout.splitlines()[-1])
        assert package_imported is imported
        for path in paths:
            np.testing.assert_allclose(loaded[path], expected[path],
                                       rtol=1e-5, atol=1e-6)
