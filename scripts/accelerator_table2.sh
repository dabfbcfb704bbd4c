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
# OUT/progress.md (epochs done, accuracy, images/s and seconds per epoch
# split into training, validation, eigenvalue, between epochs and the
# rest, of every row so far, and the GPU's utilisation: nvidia-smi samples
# it every 2 s into OUT/gpu.csv while the rows train, 'n/a' without it)
# and OUT/table2.tar.gz (the whole run folder, to keep between machines:
# extract it into OUT before the next call on a fresh machine).
# EPOCHS=N overrides the 300-epoch budget and TRAIN_SIZE=N the training and
# validation set sizes (for a quick check; TEST_SIZE=N the validation set's
# alone), HESSIAN_EVERY=N the eigenvalue's cadence of the step-decay rows
# (two-phase rows estimate every epoch), VALIDATION_FREQ=N the validation's
# (every N epochs and the last), JOBS=N the number of rows
# trained at once, ONLY=LABELS the rows (comma-separated), PRECISION=bf16
# the precision, PIPELINE=numpy the input pipeline (default device: the
# training set stays in GPU memory and every batch is made there; the same
# batches as numpy, so a run started on one continues on the other).
# PRESET=NAME runs another preset the same way (its folder and archive are
# OUT/NAME and OUT/NAME.tar.gz), e.g. PRESET=cifar10-table7-cpu for a
# CPU-scale study with its 3 seeds, several runs at once. A comma-separated
# list runs those presets side by side, JOBS runs each, e.g.
#   PRESET=cifar10-table1-cpu,cifar10-table6-cpu,cifar10-table7-cpu,stages-cpu \
#       JOBS=4 scripts/accelerator_table2.sh OUT 8
# for the four CPU-scale studies (16 runs at once on a 16-core GPU machine).
set -euo pipefail

OUT=${1:?usage: scripts/accelerator_table2.sh OUT [MINUTES]}
MINUTES=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${WHEELS:-$ROOT/.whl}
CIFAR_TAR=${CIFAR_TAR:-$ROOT/.carry/cifar10-jpeg.tar.gz}
DATA=${DATA:-/tmp/cifar10}
JOBS=${JOBS:-5}
PRESET=${PRESET:-cifar10-table2}
IFS=, read -r -a PRESETS <<< "$PRESET"
# The folder (and archive) name of a preset's runs under OUT.
runs_of() { if [ "$1" = cifar10-table2 ]; then echo table2; else echo "$1"; fi; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if ! python3 -c "import importlib.util as u, sys; \
sys.exit(u.find_spec('keras') is None)"; then
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONUNBUFFERED=1

# Bad PRESET or ONLY values stop the script before anything runs. Prints
# the presets that read the CIFAR-10 folder (the demo does not).
data_presets=$(python3 - "$PRESET" "${ONLY:-}" <<'EOF'
import sys
from keras_lrphase.presets import PRESETS, PRESET_NAMES

names, only = sys.argv[1].split(","), sys.argv[2]


def fail(message):
    print(f"accelerator_table2.sh: {message}", file=sys.stderr)
    sys.exit(2)


for name in names:
    if name not in PRESET_NAMES:
        fail(f"PRESET: {name!r} is not one of {', '.join(PRESET_NAMES)}")
if len(set(names)) != len(names):
    fail(f"PRESET names a preset twice: {sys.argv[1]!r}")
if only and len(names) > 1:
    fail(f"ONLY picks runs of one preset; PRESET names {len(names)}: "
         f"{sys.argv[1]!r}")
# cifar10-table2 and the other paper-scale CIFAR-10 presets could read
# TFDS; here they read the carried image folder.
print(" ".join(n for n in names if PRESETS[n].requires_data_dir
               or PRESETS[n].common.get("dataset") == "cifar10"))
EOF
) || exit 2
needs_data() { [[ " $data_presets " == *" $1 "* ]]; }
if [ -n "$data_presets" ] && [ ! -d "$DATA/train" ]; then
    mkdir -p "$DATA"
    tar -xzf "$CIFAR_TAR" -C "$DATA"
fi
for preset in "${PRESETS[@]}"; do
    runs=$(runs_of "$preset")
    if [ -f "$OUT/$runs.tar.gz" ] && [ ! -d "$OUT/$runs" ]; then
        tar -xzf "$OUT/$runs.tar.gz" -C "$OUT"
    fi
done

python3 -c "import jax, keras; print('keras', keras.__version__, 'on', \
keras.backend.backend(), jax.__version__, jax.devices())"

# The images are decoded into the cache once, before the runs start.
if [ -n "$data_presets" ]; then
    python3 -c "from keras_lrphase.data.image_folder import load_image_folder; \
load_image_folder('$DATA', verbose=1)"
fi

# The GPU's utilisation and memory every 2 s while the rows train (appended:
# a continued call adds its samples).
sampler=
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 2 >> "$OUT/gpu.csv" 2> /dev/null &
    sampler=$!
fi

# Each preset in a process group of its own, so that what is left of it
# (the --jobs workers) is stopped at the end, and nothing else on the machine.
groups=()
for preset in "${PRESETS[@]}"; do
    args=(compare --preset "$preset" --pipeline "${PIPELINE:-device}"
          --out "$OUT/$(runs_of "$preset")" --jobs "$JOBS" --verbose 1)
    if needs_data "$preset"; then args+=(--data-dir "$DATA"); fi
    if [ -n "${EPOCHS:-}" ]; then args+=(--epochs "$EPOCHS"); fi
    if [ -n "${PRECISION:-}" ]; then args+=(--precision "$PRECISION"); fi
    if [ -n "${ONLY:-}" ]; then args+=(--only "$ONLY"); fi
    if [ -n "${TRAIN_SIZE:-}" ]; then args+=(--train-size "$TRAIN_SIZE"); fi
    if [ -n "${TEST_SIZE:-${TRAIN_SIZE:-}}" ]; then
        args+=(--test-size "${TEST_SIZE:-$TRAIN_SIZE}")
    fi
    if [ -n "${HESSIAN_EVERY:-}" ]; then args+=(--hessian-every "$HESSIAN_EVERY"); fi
    if [ -n "${VALIDATION_FREQ:-}" ]; then
        args+=(--validation-freq "$VALIDATION_FREQ")
    fi
    # The folder exists (and is archived) even if the time is up before
    # the command has made it.
    mkdir -p "$OUT/$(runs_of "$preset")"
    setsid timeout --signal=INT --kill-after=20 "${MINUTES}m" \
        python3 -m keras_lrphase "${args[@]}" &
    groups+=($!)
done
stop_all() {
    for group in "${groups[@]}"; do kill -"$1" -- -"$group" 2>/dev/null || true; done
}
trap 'stop_all INT; if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; fi' INT TERM
status=0
for group in "${groups[@]}"; do wait "$group" || status=$?; done
stop_all INT
sleep 2
stop_all KILL
trap - INT TERM
if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi

: > "$OUT/progress.md"
for preset in "${PRESETS[@]}"; do
    runs=$(runs_of "$preset")
    { echo "## $preset"; echo
      python3 -m keras_lrphase.training.progress_report "$OUT/$runs" \
          --gpu "$OUT/gpu.csv" || true
      echo; } >> "$OUT/progress.md"
    tar -czf "$OUT/$runs.tar.gz.tmp" -C "$OUT" "$runs" \
        && mv "$OUT/$runs.tar.gz.tmp" "$OUT/$runs.tar.gz"
done
cat "$OUT/progress.md"
for preset in "${PRESETS[@]}"; do
    runs=$(runs_of "$preset")
    if [ -f "$OUT/$runs/table.md" ]; then
        cat "$OUT/$runs/table.md"
    else
        echo "$preset not finished (status $status): call again with the same OUT to continue."
    fi
done
