"""Prints the LR / eigenvalue / phase trace of one real TwoPhaseLR run.

A small CNN on a class-balanced subset of CIFAR-10 (the JPEG copy, see
`../shared/data/README.md`), trained with a large batch, GradualWarmup and
TwoPhaseLR; 50 epochs take about 3 minutes on two CPU cores. One line per epoch:

    epoch  loss  learning_rate  phase  hessian_max_eigenvalue  iterations

Usage:

    mkdir -p /tmp/cifar10 && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar10
    python benchmarks/two_phase_trace.py --data-dir /tmp/cifar10
"""

import argparse
import time

import keras

from keras_lrphase.callbacks import GradualWarmup
from keras_lrphase.callbacks import TwoPhaseLR
from keras_lrphase.data import channel_stats
from keras_lrphase.data import eval_dataset
from keras_lrphase.data import load_dataset
from keras_lrphase.data import normalized_batch
from keras_lrphase.data import train_dataset
from keras_lrphase.models.small import small_cnn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("cifar10", "digits"),
                        default="cifar10",
                        help="digits: the bundled 8x8 digits (no download)")
    parser.add_argument("--data-dir", default="/tmp/cifar10")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.8)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(dataset="digits", data_dir=None, train_size=256, batch_size=64, epochs=4, warmup_epochs=1, patience=1)

    keras.utils.set_random_seed(args.seed)
    data = load_dataset(args.dataset, args.data_dir)
    data = data.subset(train_size=args.train_size,
                       test_size=min(1000, data.test_examples), seed=args.seed)
    mean, std = channel_stats(data.x_train)
    train = train_dataset(
        data.x_train, data.y_train, args.batch_size, mean, std,
        seed=args.seed,
    )
    hessian_batch = normalized_batch(
        data.x_train, data.y_train, args.batch_size, mean, std, seed=args.seed
    )
    model = small_cnn(data.input_shape, data.num_classes, filters=(16, 32, 64))
    model.compile(
        keras.optimizers.SGD(args.learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    two_phase = TwoPhaseLR(
        hessian_batch, args.epochs, warmup_epochs=args.warmup_epochs,
        plateau_patience=args.patience, layer="logits", verbose=1,
    )
    rows = []

    def record(epoch, logs):
        rows.append((
            epoch, logs["loss"], logs["learning_rate"], logs["lrphase_phase"],
            logs.get("hessian_max_eigenvalue"), logs.get("hessian_iterations"),
        ))

    start = time.perf_counter()
    model.fit(
        train, epochs=args.epochs, verbose=0, shuffle=False,
        callbacks=[
            GradualWarmup(args.warmup_epochs), two_phase,
            keras.callbacks.LambdaCallback(on_epoch_end=record),
        ],
    )
    seconds = time.perf_counter() - start
    print("epoch  loss     learning_rate  phase  hessian_max_eigenvalue  iterations")
    for epoch, loss, lr, phase, eig, its in rows:
        eig = "" if eig is None else f"{eig:.4f}"
        its = "" if its is None else its
        print(f"{epoch:5d}  {loss:.4f}  {lr:.6f}       {phase:d}      {eig:>10}  {its!s:>10}")
    c = two_phase.controller
    print(
        f"plateau_epoch={c.plateau_epoch} switch_epoch={c.switch_epoch} "
        f"decay_epochs={c.decay_epochs} seconds={seconds:.0f}"
    )
    test = eval_dataset(data.x_test, data.y_test, args.batch_size, mean, std)
    accuracy = model.evaluate(test, verbose=0)[1]
    print(f"test_accuracy={accuracy:.4f} ({data.test_examples} test images)")


if __name__ == "__main__":
    main()
