"""The seam where epoch-level decision inputs are agreed across workers.

A learning rate decision (a plateau, a decay) made from a worker's own loss
or Hessian eigenvalue can differ between workers, which then train with
different learning rates. Every controller callback of the package passes
the values a decision uses through a `MetricReducer` first, so that all
workers decide from the same numbers in the same epoch. `LocalReducer` is
the identity of a single process; multi-worker reducers (Horovod,
`tf.distribute`, JAX multi-process) subclass `MetricReducer`.
`default_reducer()` (in `reducer_selection.py`, which imports the
multi-worker reducers that import this module) is what the callbacks use
without a `reducer` argument: `JaxProcessReducer` in a multi-process JAX
run, `HorovodReducer` in a Horovod job of more than one rank,
`TfDistributeReducer` inside the scope of a
`tf.distribute.MultiWorkerMirroredStrategy` of more than one
worker, else `LocalReducer`.

Which batch a worker's Hessian eigenvalue is computed on: the one the
worker passes as `hessian_data` (`TwoPhaseLR`) or `data`
(`HessianMonitor`). In a multi-process run that is each worker's own shard,
and the reducer averages the workers' eigenvalues, as the paper's
8 workers x 1024 samples setting implies. Under
`tf.distribute.MirroredStrategy` (one process, several devices) there is
one worker: the whole batch is evaluated on one device and the estimate
equals the single-device one.
"""

import abc

import numpy as np


class MetricReducer(abc.ABC):
    """Base class: averages named scalars across the workers of a run.

    Subclass it and implement `reduce_mean` to plug a multi-worker backend
    into the package's callbacks (argument `reducer`). The callbacks call it
    once per epoch end, from every worker, with the same keys in the same
    order, so an implementation may run one collective per call.

    Example:

    >>> from keras_lrphase.distributed.reduction import MetricReducer
    >>> class Halving(MetricReducer):  # a stand-in for a real all-reduce
    ...     def reduce_mean(self, values):
    ...         return {k: v / 2 for k, v in values.items()}
    >>> Halving().reduce_mean({"loss": 1.0})
    {'loss': 0.5}

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (data-parallel SGD over P workers;
        experiments with Horovod).
    """

    @property
    def is_chief(self):
        """Whether this worker writes files (state copies): rank 0 only."""
        return True

    @property
    def world_size(self):
        """Number of workers the values are averaged over (1 here).

        The package's callbacks record it in their saved state and refuse
        to resume a state saved by another number of workers.
        """
        return 1

    @abc.abstractmethod
    def reduce_mean(self, values):
        """Returns the mean over workers of each value.

        Args:
            values: Dict of str to float: this worker's values (e.g.
                `{"loss": 0.31, "hessian_max_eigenvalue": 12.5}`).

        Returns:
            A new dict with the same keys and the mean over all workers of
            each value, as Python floats; identical on every worker.
        """


    def reduce_mean_array(self, array):
        """Returns the mean over workers of a float array (elementwise).

        What a product summed over the workers' data sends (the Hessian
        spectrum's operator, `keras_lrphase.hessian.HessianOperator`). This
        default sends the entries through `reduce_mean` as one dict;
        a reducer may override it with one collective on the array.

        Args:
            array: A NumPy array of floats, the same shape on every worker.

        Returns:
            A float64 array of that shape, identical on every worker.
        """
        array = np.asarray(array, dtype=np.float64)
        flat = array.ravel()
        means = self.reduce_mean({str(i): v for i, v in enumerate(flat)})
        return np.fromiter(
            (means[str(i)] for i in range(flat.size)), np.float64, flat.size
        ).reshape(array.shape)


class LocalReducer(MetricReducer):
    """The single-process reducer: returns the values unchanged (as floats).

    Example:

    >>> from keras_lrphase.distributed.reduction import LocalReducer
    >>> LocalReducer().reduce_mean({"loss": 0.25})
    {'loss': 0.25}
    """

    def reduce_mean(self, values):
        return {name: float(value) for name, value in values.items()}

    def reduce_mean_array(self, array):
        return np.array(array, dtype=np.float64)


def numbers_of(values):
    """The values of the dict `values` as floats, in its order, or raises.

    What a multi-worker `reduce_mean` sends to its collective.
    """
    if not isinstance(values, dict):
        raise ValueError(
            "Argument `values` must be a dict of names to numbers. "
            f"Received: values={values!r}"
        )
    numbers = []
    for name, value in values.items():
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            raise ValueError(
                f"Argument `values` must map names to numbers. Received: "
                f"values[{name!r}]={value!r}"
            ) from None
    return numbers
