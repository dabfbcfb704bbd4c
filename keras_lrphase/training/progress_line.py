"""One compact progress line per run, for `keras-lrphase compare`."""

import math
import sys

import keras


class ProgressLine(keras.callbacks.Callback):
    """Rewrites one line per run at each epoch end, on a terminal only.

    `compare` runs many configurations; Keras' progress bar prints thousands
    of lines (with colour codes even when not on a terminal). This prints
    `prefix epoch 12/80  loss 0.912  val 61.3%  lr 0.1` in place on a
    terminal, and nothing when the output is a file or a pipe (the run's
    summary line follows at its end either way).

    Args:
        prefix: String. Put in front of the line (e.g. `"[2/9] two-phase"`).
        stream: File object. Defaults to `sys.stdout`.
        every: Int or None. Instead of rewriting one line on a terminal,
            print a full line every `every` epochs (and at the last), to a
            terminal or a file alike: what runs in parallel processes
            (`compare --jobs`) use. Defaults to `None`.

    Example:

    >>> import io, numpy as np, keras
    >>> class Terminal(io.StringIO):
    ...     def isatty(self):
    ...         return True
    >>> out = Terminal()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), loss="mse")
    >>> _ = model.fit(np.ones((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[ProgressLine("[1/1] run", stream=out)])
    >>> [line.split()[:4] for line in out.getvalue().split("\\r")[1:3]]
    [['[1/1]', 'run', 'epoch', '1/2'], ['[1/1]', 'run', 'epoch', '2/2']]
    """

    def __init__(self, prefix, stream=None, every=None):
        super().__init__()
        self.prefix = prefix
        self.stream = stream or sys.stdout
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        epochs = self.params.get("epochs")
        if self.every is not None:
            if (epoch + 1) % self.every and epoch + 1 != epochs:
                return
        elif not self.stream.isatty():
            return
        logs = logs or {}
        parts = [f"{self.prefix} epoch {epoch + 1}/{self.params.get('epochs')}"]
        for key, label, fmt in (("loss", "loss", "{:.3f}"),
                                ("val_accuracy", "val", "{:.1%}"),
                                ("learning_rate", "lr", "{:.3g}")):
            value = logs.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                parts.append(f"{label} {fmt.format(float(value))}")
        if self.every is not None:
            self.stream.write("  ".join(parts) + "\n")
        else:
            self.stream.write("\r" + "  ".join(parts) + "\033[K")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.every is None and self.stream.isatty():
            self.stream.write("\r\033[K")
            self.stream.flush()
