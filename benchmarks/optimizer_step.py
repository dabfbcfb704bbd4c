"""Training-step time of ResNet-20 with SGD-momentum, LARS and LARSWrapper.

Compiles three copies of the CIFAR ResNet-20 (same initial weights) with
`SGD(momentum=0.9)`, `LARS` and `LARSWrapper(SGD(momentum=0.9))`, traces
each train step once, then times them in interleaved rounds (the order
rotates every round, so drifts in machine load hit all three alike) on one
fixed batch of random CIFAR-shaped data. Prints the median seconds per step
of each optimizer and the ratios LARS/SGD and wrapper/SGD as one line of
JSON, together with the time of the optimizer update alone (an XLA-compiled
`optimizer.apply` on fixed gradients, TensorFlow backend). Target: LARS
within 1.10x of SGD.

    python benchmarks/optimizer_step.py [--batch-size 256] [--rounds 7] \\
        [--steps 5]
"""

import argparse
import json
import os
import statistics
import time

import keras
import numpy as np

from keras_lrphase.models.resnet import resnet20
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper


def _optimizers():
    return {
        "sgd": keras.optimizers.SGD(0.1, momentum=0.9),
        "lars": LARS(0.1, momentum=0.9, weight_decay=5e-4,
                     trust_coefficient=0.001),
        "lars_wrapper": LARSWrapper(keras.optimizers.SGD(0.1, momentum=0.9),
                                    trust_coefficient=0.001),
    }


def _applier(model):
    """A timer of `model.optimizer.apply` alone; `None` off TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    variables = model.trainable_variables
    rng = np.random.default_rng(1)
    grads = [
        tf.constant(rng.normal(scale=1e-3, size=v.shape).astype("float32"))
        for v in variables
    ]
    apply = tf.function(
        lambda: model.optimizer.apply(grads, variables), jit_compile=True
    )
    apply()  # traces and compiles

    def timed(steps):
        start = time.perf_counter()
        for _ in range(steps):
            apply()
        keras.ops.convert_to_numpy(variables[0])  # synchronises
        return (time.perf_counter() - start) / steps

    return timed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed train steps per optimizer and round")
    parser.add_argument("--apply-steps", type=int, default=20,
                        help="timed optimizer updates per round (TF only)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(batch_size=16, rounds=1, steps=1, apply_steps=1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32"))
    y = keras.ops.convert_to_tensor(
        rng.integers(0, 10, args.batch_size).astype("int32"))

    weights = resnet20().get_weights()
    models = {}
    for name, optimizer in _optimizers().items():
        model = resnet20()
        model.set_weights(weights)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.train_on_batch(x, y)  # traces and compiles the step
        models[name] = model

    names = list(models)
    per_step = {name: [] for name in names}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            model = models[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)  # returns NumPy: synchronises
            per_step[name].append((time.perf_counter() - start) / args.steps)

    # The optimizer update alone (XLA-compiled `apply` on fixed gradients),
    # far less noisy than whole steps on a busy machine.
    apply_time = {name: [] for name in names}
    appliers = {name: _applier(models[name]) for name in names}
    if all(appliers.values()):
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                apply_time[name].append(
                    appliers[name](args.apply_steps))

    median = {name: statistics.median(t) for name, t in per_step.items()}
    result = {
        "model": "resnet20",
        "backend": keras.backend.backend(),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "median_seconds_per_step": {
            name: round(t, 4) for name, t in median.items()
        },
        "seconds_per_step_by_round": {
            name: [round(t, 4) for t in times]
            for name, times in per_step.items()
        },
        "lars_over_sgd": round(median["lars"] / median["sgd"], 3),
        "wrapper_over_sgd": round(median["lars_wrapper"] / median["sgd"], 3),
        "median_seconds_per_apply": {
            name: round(statistics.median(t), 5) if t else None
            for name, t in apply_time.items()
        },
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
