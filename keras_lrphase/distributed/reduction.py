"""The seam where epoch-level decision inputs are agreed across workers.

A learning rate decision (a plateau, a decay) made from a worker's own loss
or Hessian eigenvalue can differ between workers, which then train with
different learning rates. Every controller callback of the package passes
the values a decision uses through a `MetricReducer` first, so that all
workers decide from the same numbers in the same epoch. `LocalReducer`, the
default, is the identity of a single process; multi-worker reducers
(Horovod, `tf.distribute`, JAX multi-process) subclass `MetricReducer`.
"""

import abc


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


class LocalReducer(MetricReducer):
    """The single-process reducer: returns the values unchanged (as floats).

    Example:

    >>> from keras_lrphase.distributed.reduction import LocalReducer
    >>> LocalReducer().reduce_mean({"loss": 0.25})
    {'loss': 0.25}
    """

    def reduce_mean(self, values):
        return {name: float(value) for name, value in values.items()}
