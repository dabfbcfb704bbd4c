"""Two-phase training with LARS and gradual warmup, data-parallel.

The distributed guide's example (docs/guides/distributed.md): one Keras
script that trains the same model on each of the three engines, every
worker making the same learning rate decisions in the same epoch. Each
worker trains on its own shard of the 8x8 digits (the global batch is 64
per worker x workers), estimates the Hessian eigenvalue on its own shard,
and the package's controllers average the estimates (the reducer is
picked from the running engine). Every worker writes `OUT/rank{r}.json`:
its learning rates, phases, eigenvalues and the controller's decisions, so
the workers can be compared.

    # Horovod (TensorFlow backend), 2 ranks on one host
    horovodrun -np 2 -H localhost:2 --gloo \\
        python examples/distributed_two_phase.py horovod OUT

    # JAX, 2 processes (one command each; process 0 listens on the port)
    KERAS_BACKEND=jax python examples/distributed_two_phase.py jax OUT \\
        --coordinator localhost:12345 --num-processes 2 --process-id 0 &
    KERAS_BACKEND=jax python examples/distributed_two_phase.py jax OUT \\
        --coordinator localhost:12345 --num-processes 2 --process-id 1

    # tf.distribute.MirroredStrategy, one process, 2 (logical) devices
    python examples/distributed_two_phase.py mirrored OUT

References:
    "Achieving Small-Batch Accuracy with Large-Batch Scalability via
    Adaptive Learning Rate Adjustment" (ICLR 2022 submission), Sections 2
    and 4 (data-parallel SGD over P workers; experiments with Horovod).
"""

import argparse
import json
import os

EPOCHS = 16
BATCH_PER_WORKER = 64
LEARNING_RATE = 8.0


def start(engine, args):
    """Joins the engine; returns (rank, workers, scope of model building)."""
    import contextlib

    if engine == "horovod":
        import horovod.tensorflow as hvd

        hvd.init()
        return hvd.rank(), hvd.size(), contextlib.nullcontext()
    if engine == "jax":
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes,
                                   args.process_id)
        import keras

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(auto_shard_dataset=False))
        return jax.process_index(), jax.process_count(), contextlib.nullcontext()
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # One process: one worker, its batch split over the two devices.
    return 0, 1, strategy.scope()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("horovod", "jax", "mirrored"))
    parser.add_argument("out")
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help="LARS learning rate (of the global batch)")
    args = parser.parse_args()
    rank, workers, scope = start(args.engine, args)

    import keras
    import numpy as np

    import keras_lrphase as lrp
    from keras_lrphase.data.digits import load_digits_data

    data = load_digits_data()
    x = data.x_train.reshape(len(data.x_train), -1).astype("float32") / 255
    y = data.y_train
    per_worker = len(x) // workers
    x, y = x[rank::workers][:per_worker], y[rank::workers][:per_worker]

    keras.utils.set_random_seed(0)
    with scope:
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, name="logits"),
        ])
        optimizer = lrp.LARS(args.lr, momentum=0.9)
        if args.engine == "horovod":
            from keras_lrphase.distributed import horovod as lrp_hvd

            optimizer = lrp_hvd.DistributedOptimizer(optimizer)
        model.compile(optimizer,
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    engine_callbacks = []
    if args.engine == "horovod":
        engine_callbacks = [lrp_hvd.MetricAverageCallback(),
                            lrp_hvd.BroadcastGlobalVariablesCallback(0)]
    two_phase = lrp.TwoPhaseLR((x, y), EPOCHS, warmup_epochs=2,
                               plateau_patience=1, min_delta=0.05,
                               eigen_kwargs={"seed": 0})
    history = model.fit(
        x, y, batch_size=BATCH_PER_WORKER, epochs=EPOCHS, shuffle=False,
        verbose=2 if rank == 0 else 0,
        callbacks=engine_callbacks + [lrp.GradualWarmup(2), two_phase])

    state = two_phase.controller
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump({
            "engine": args.engine, "workers": workers,
            "reducer": type(two_phase.reducer).__name__,
            "learning_rate": history.history["learning_rate"],
            "phase": history.history["lrphase_phase"],
            "eigenvalue": history.history["hessian_max_eigenvalue"],
            "loss": history.history["loss"],
            "plateau_epoch": state.plateau_epoch,
            "switch_epoch": state.switch_epoch,
            "decay_epochs": list(state.decay_epochs),
            "weights_sum": float(sum(np.sum(w, dtype="float64")
                                     for w in model.get_weights())),
        }, f, indent=1)


if __name__ == "__main__":
    main()
