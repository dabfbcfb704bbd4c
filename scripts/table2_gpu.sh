#!/usr/bin/env bash
# The paper's Table 2 (cifar10-table2, 7 rows: the paper's 5, two-phase at
# 4.8 and with the default rules) in a GPU window of at most 10 minutes a
# command, with its evidence exported as small text:
#
#   OUT=/some/folder scripts/table2_gpu.sh profile   # 5 epochs per row, bf16
#   OUT=/some/folder scripts/table2_gpu.sh full      # 300 epochs per row
#
# Each mode runs scripts/accelerator_table2.sh (Keras from the wheels in
# .whl/, CIFAR-10 from .carry/cifar10-jpeg.tar.gz: see its header for the
# one-time downloads) into OUT/MODE, stopped after MINUTES so that the
# command ends inside 10 minutes with its wheel install and image decoding,
# and then writes OUT/results/cifar10-table2[-profile]/: each row's
# history.csv and summary.json, table.md and compare.png (redrawn from the
# rows that finished), progress.md (seconds per epoch split into training,
# validation, eigenvalue, between epochs and the rest; the GPU's
# utilisation) and a README.md (hardware, backend, precision, commit,
# command). Copy that folder into the repository's results/ folder.
# A `full` call that did not finish every row leaves OUT/full/table2.tar.gz:
# the same call with it in OUT continues the rows.
#
# Variables (defaults: profile | full):
#   MINUTES          training minutes before the stop (5 | 8)
#   EPOCHS           epoch budget (5 | the preset's 300)
#   PRECISION        fp32 or bf16 (bf16 | bf16)
#   JOBS             rows trained at once (7 | 7)
#   ONLY             comma-separated rows (all)
#   HESSIAN_EVERY    eigenvalue cadence of the step-decay rows (1 | 10)
#   VALIDATION_FREQ  validate every N epochs and at the last (1 | 5)
#   TINY=1           a CPU check of the whole path: 2 epochs, 8192 training
#                    and 500 validation images, 2 rows at once
set -euo pipefail

MODE=${1:?usage: OUT=FOLDER scripts/table2_gpu.sh profile|full}
OUT=${OUT:?OUT must name the output folder}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$MODE" in
    profile) defaults=(5 5 1 1); results=cifar10-table2-profile ;;
    full) defaults=(8 "" 10 5); results=cifar10-table2 ;;
    *) echo "table2_gpu.sh: MODE must be profile or full; got '$MODE'" >&2
       exit 2 ;;
esac
export MINUTES=${MINUTES:-${defaults[0]}}
export EPOCHS=${EPOCHS:-${defaults[1]}}
export HESSIAN_EVERY=${HESSIAN_EVERY:-${defaults[2]}}
export VALIDATION_FREQ=${VALIDATION_FREQ:-${defaults[3]}}
export PRECISION=${PRECISION:-bf16}
export JOBS=${JOBS:-7}
if [ "${TINY:-0}" = 1 ]; then
    export EPOCHS=2 TRAIN_SIZE=${TRAIN_SIZE:-8192} TEST_SIZE=${TEST_SIZE:-500}
    export JOBS=${TINY_JOBS:-2}
fi
export PRESET=cifar10-table2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
runs=$OUT/$MODE

started=$(date +%s)
bash "$ROOT/scripts/accelerator_table2.sh" "$runs" "$MINUTES"
echo "table2_gpu.sh $MODE: training call took $(( $(date +%s) - started )) s"

# Where the wheels were installed (the GPU machine has no Keras of its own).
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
redraw=(compare --preset cifar10-table2 --out "$runs/table2" --redraw
        --verbose 0)
if [ -n "$EPOCHS" ]; then redraw+=(--epochs "$EPOCHS"); fi
python3 -m keras_lrphase "${redraw[@]}" || true
command="OUT=\$OUT MINUTES=$MINUTES EPOCHS=$EPOCHS PRECISION=$PRECISION"
command+=" JOBS=$JOBS HESSIAN_EVERY=$HESSIAN_EVERY VALIDATION_FREQ=$VALIDATION_FREQ"
command+="${ONLY:+ ONLY=$ONLY}${TRAIN_SIZE:+ TRAIN_SIZE=$TRAIN_SIZE}"
command+="${TEST_SIZE:+ TEST_SIZE=$TEST_SIZE} scripts/table2_gpu.sh $MODE"
python3 - "$runs/table2" "$OUT/results/$results" "$command" "$runs/gpu.csv" <<'EOF'
import sys

from keras_lrphase.training.results_export import export_results

written = export_results(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
print(f"table2_gpu.sh: exported {len(written)} files to {sys.argv[2]}")
EOF
cat "$OUT/results/$results/progress.md"
echo "table2_gpu.sh $MODE: $(( $(date +%s) - started )) s in all"
