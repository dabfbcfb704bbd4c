"""Draws the spectrum guide's figures from scikit-learn's digits (offline).

The two models of `notebooks/spectrum.ipynb`: one MLP (64-64-10) trained
with SGD(0.05, momentum 0.9) with batches of 16 (10 epochs) and of 700
(100 epochs); then, on 300 training images, the Hessian eigenvalue density
of every weight (stochastic Lanczos quadrature, 60 steps) with the top 5
eigenvalues (Lanczos), and the largest eigenvalue of each layer:

    python scripts/spectrum_figure.py      # docs/images/spectrum_density.png,
                                           # docs/images/spectrum_layers.png

It needs the package, a backend and the `demo` extra; about a minute on a
CPU.
"""

import argparse
import pathlib

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_lrphase as lrp
from keras_lrphase.analysis import plot_hessian_density
from keras_lrphase.analysis import plot_layer_eigenvalues

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build_model(lr, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, y_train = x[:1400], y[:1400]
    sample = (x_train[:300], y_train[:300])
    spectra, tops = {}, {}
    for label, batch_size, epochs in [("batch 16", 16, 10), ("batch 700", 700, 100)]:
        model = build_model(0.05)
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
        spectra[label] = lrp.hessian_spectrum(model, sample, k=5, trace_probes=0,
                                              density_steps=60, seed=0)
        tops[label] = {name: lrp.top_hessian_eigenvalues(
            model, sample, k=1, layer=name, seed=0).values[0]
            for name in ("hidden", "logits", "all")}
        print(label, "top eigenvalues", np.round(spectra[label].eigenvalues.values, 4),
              "per layer", {k: round(float(v), 4) for k, v in tops[label].items()})
    args.out.mkdir(parents=True, exist_ok=True)
    plot_hessian_density(
        {label: s.density for label, s in spectra.items()},
        eigenvalues={label: s.eigenvalues.values for label, s in spectra.items()},
        title="Hessian eigenvalue density of an MLP on digits, every weight",
        path=args.out / "spectrum_density.png")
    plot_layer_eigenvalues(tops, title="largest Hessian eigenvalue per layer",
                           figsize=(6.0, 3.5),
                           path=args.out / "spectrum_layers.png")
    print("wrote", args.out / "spectrum_density.png", "and",
          args.out / "spectrum_layers.png")


if __name__ == "__main__":
    main()
