"""The Horovod bridge for Keras 3: data-parallel jobs launched with `horovodrun`.

Horovod's own Keras layer does not work on Keras 3 (its
`DistributedOptimizer` never averages, its callbacks fail); its TensorFlow
collectives do. This module gives Horovod users the names they know, built
on those collectives (TensorFlow backend):

* `DistributedOptimizer(optimizer)`: gradients averaged across ranks inside
  the compiled train step, before `optimizer` applies them.
* `BroadcastGlobalVariablesCallback(root_rank=0)`: every rank starts from
  rank 0's model and optimizer variables.
* `MetricAverageCallback()`: epoch logs averaged across ranks (place it
  first in `callbacks`).
* `HorovodReducer()`: the reducer the package's LR controllers average
  their decision inputs with (loss, Hessian eigenvalue), picked by
  `keras_lrphase.distributed.default_reducer()` in a job of more than one
  rank, so every rank makes the same decision in the same epoch.
* `rank_zero_only(callbacks)`, `verbose_on_rank_zero(verbose)`: files and
  printing from rank 0 only.

Importing this module does not import Horovod; using one of its objects
does (an `ImportError` naming `horovod` and how to install it, if missing).

A job is a normal Keras script with a few more lines, launched as
`horovodrun -np 2 -H localhost:2 --gloo python train.py`:

```python
import horovod.tensorflow as hvd
hvd.init()
import keras, keras_lrphase as lrp
from keras_lrphase.distributed import horovod as lrp_hvd

x, y = own_shard(hvd.rank(), hvd.size())      # each rank its own samples
model = make_model()
model.compile(lrp_hvd.DistributedOptimizer(lrp.LARS(0.1 * hvd.size())),
              loss="sparse_categorical_crossentropy", jit_compile=False)
model.fit(x, y, batch_size=1024, epochs=90,   # 1024 per rank
          verbose=lrp_hvd.verbose_on_rank_zero(1), callbacks=[
    lrp_hvd.MetricAverageCallback(),          # first
    lrp_hvd.BroadcastGlobalVariablesCallback(0),
    lrp.GradualWarmup(5),
    lrp.TwoPhaseLR((x[:1024], y[:1024])),     # reducer: HorovodReducer()
    *lrp_hvd.rank_zero_only([keras.callbacks.CSVLogger("log.csv")]),
])
```

The global batch is the per-rank batch times the number of ranks; the
Hessian eigenvalue is estimated by each rank on its own batch and averaged
(the paper's 8 workers x 1024 samples).

Example:

>>> from keras_lrphase.distributed import horovod as lrp_hvd
>>> callback = lrp_hvd.BroadcastGlobalVariablesCallback(root_rank=0)
>>> lrp_hvd.HorovodReducer()  # doctest: +SKIP

References:
    "Achieving Small-Batch Accuracy with Large-Batch Scalability via
    Adaptive Learning Rate Adjustment" (ICLR 2022 submission), Sections 2
    and 4 (data-parallel SGD over P workers; experiments with Horovod).
"""

from keras_lrphase.distributed.broadcast_global_variables_callback import (
    BroadcastGlobalVariablesCallback,
)
from keras_lrphase.distributed.distributed_optimizer import DistributedOptimizer
from keras_lrphase.distributed.horovod_reducer import HorovodReducer
from keras_lrphase.distributed.horovod_runtime import rank_zero_only
from keras_lrphase.distributed.horovod_runtime import verbose_on_rank_zero
from keras_lrphase.distributed.metric_average_callback import (
    MetricAverageCallback,
)

__all__ = [
    "BroadcastGlobalVariablesCallback",
    "DistributedOptimizer",
    "HorovodReducer",
    "MetricAverageCallback",
    "rank_zero_only",
    "verbose_on_rank_zero",
]
