#!/usr/bin/env bash
# Runs (or continues) the paper's Table 2 on a GPU machine with JAX but no
# TensorFlow, Keras or network, and writes what it has to OUT.
#
#   scripts/accelerator_table2.sh OUT [MINUTES]
#
# Before, on a machine with a network, in the repository root:
#   mkdir -p .whl .carry
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
#   cp /path/to/cifar10-jpeg.tar.gz .carry/
# (keras's other needs, numpy, h5py, rich, absl-py, ml-dtypes and packaging,
# are on such machines already; Pillow decodes the images.)
#
# The runs train in OUT/table2 (one folder per row, 5 rows at once), each
# resumable: the script stops them after MINUTES (default 8; decimals such
# as 3.5 work) and a later
# call with the same OUT continues where they stopped, until every row has
# its 300 epochs and OUT/table2/table.md is written. Each call also writes
# OUT/progress.md (epochs done, accuracy and images/s of every row so far)
# and OUT/table2.tar.gz (the whole run folder, to keep between machines:
# extract it into OUT before the next call on a fresh machine).
# EPOCHS=N overrides the 300-epoch budget and TRAIN_SIZE=N the training and
# validation set sizes (for a quick check), JOBS=N the number of rows
# trained at once, ONLY=LABELS the rows (comma-separated), PRECISION=bf16
# the precision, PIPELINE=numpy the input pipeline (default device: the
# training set stays in GPU memory and every batch is made there; the same
# batches as numpy, so a run started on one continues on the other).
# PRESET=NAME runs another preset the same way (its folder and archive are
# OUT/NAME and OUT/NAME.tar.gz), e.g. PRESET=cifar10-table7-cpu for a
# CPU-scale study with its 3 seeds, several runs at once.
set -euo pipefail

OUT=${1:?usage: scripts/accelerator_table2.sh OUT [MINUTES]}
MINUTES=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${WHEELS:-$ROOT/.whl}
CIFAR_TAR=${CIFAR_TAR:-$ROOT/.carry/cifar10-jpeg.tar.gz}
DATA=${DATA:-/tmp/cifar10}
JOBS=${JOBS:-5}
PRESET=${PRESET:-cifar10-table2}
if [ "$PRESET" = cifar10-table2 ]; then RUNS=table2; else RUNS=$PRESET; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONUNBUFFERED=1

if [ ! -d "$DATA/train" ]; then
    mkdir -p "$DATA"
    tar -xzf "$CIFAR_TAR" -C "$DATA"
fi
if [ -f "$OUT/$RUNS.tar.gz" ] && [ ! -d "$OUT/$RUNS" ]; then
    tar -xzf "$OUT/$RUNS.tar.gz" -C "$OUT"
fi

python3 -c "import jax, keras; print('keras', keras.__version__, 'on', \
keras.backend.backend(), jax.__version__, jax.devices())"

args=(compare --preset "$PRESET" --data-dir "$DATA"
      --pipeline "${PIPELINE:-device}"
      --out "$OUT/$RUNS" --jobs "$JOBS" --verbose 1)
if [ -n "${EPOCHS:-}" ]; then args+=(--epochs "$EPOCHS"); fi
if [ -n "${PRECISION:-}" ]; then args+=(--precision "$PRECISION"); fi
if [ -n "${ONLY:-}" ]; then args+=(--only "$ONLY"); fi
if [ -n "${TRAIN_SIZE:-}" ]; then
    args+=(--train-size "$TRAIN_SIZE" --test-size "$TRAIN_SIZE")
fi
# The first call decodes the images into the cache once, before the runs.
# In a process group of its own, so that what is left of it (the --jobs
# workers) is stopped at the end, and nothing else on the machine.
status=0
setsid timeout --signal=INT --kill-after=20 "${MINUTES}m" \
    python3 -m keras_lrphase "${args[@]}" &
group=$!
trap 'kill -INT -- -$group 2>/dev/null' INT TERM
wait $group || status=$?
kill -INT -- -$group 2>/dev/null || true
sleep 2
kill -KILL -- -$group 2>/dev/null || true
trap - INT TERM

python3 -m keras_lrphase.training.progress_report "$OUT/$RUNS" \
    > "$OUT/progress.md" || true
cat "$OUT/progress.md"
tar -czf "$OUT/$RUNS.tar.gz.tmp" -C "$OUT" "$RUNS" \
    && mv "$OUT/$RUNS.tar.gz.tmp" "$OUT/$RUNS.tar.gz"
if [ -f "$OUT/$RUNS/table.md" ]; then
    cat "$OUT/$RUNS/table.md"
else
    echo "Not finished (status $status): call again with the same OUT to continue."
fi
