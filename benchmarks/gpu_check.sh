#!/usr/bin/env bash
# The kit on one GPU, in under ten minutes: every step has a time cap, and every number goes into one file.
#
#   make setup                          # once (not timed here): the environment in .venv
#   bash benchmarks/gpu_check.sh [OUT]  # OUT: default runs/gpu_check/gpu_check.md
#
# Steps (cap in seconds):
#   1. make rehearse DEVICE=cuda for one notebook per track (GReg 11, MME 21, BOOD 32), profile paper, smoke
#      mode on stand-in data, with the ImageNet variants of those notebooks (MME ViT-B/16, BOOD ImageNet-100) (390)
#   2. the AMP tests: GReg's regulariser under fp16 autocast on CUDA, and fit's AMP switch               (45)
#   3. GReg's step ratio (GReg step / energy step, target <= 2.5x) on CIFAR ResNet-18 and DenseNet-BC-100,
#      the paper's batch of 64 ID + 128 auxiliary images                                                 (45)
#   4. Stable Diffusion v1.4-sized generation timing (fp16, 512x512, 50 PLMS steps, 64 images)            (100)
# A step that fails or runs out of time is marked so in the file; the others still run.
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-runs/gpu_check/gpu_check.md}
WORK=$(dirname "$OUT")/gpu_check_parts
mkdir -p "$WORK"
if [ ! -x "$PY" ]; then echo "no .venv: run 'make setup' first" >&2; exit 2; fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA GPU visible to torch: this script checks the GPU paths" >&2; exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo "- $("$PY" -c 'import torch, os; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores")')"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---:|"
} > "$OUT"

# run LOG LABEL CAP COMMAND...: the command under a time cap, its output in $WORK/LOG.log, a row in the table
run() {
    local log=$1 name=$2 cap=$3; shift 3
    local t0=$SECONDS
    timeout --kill-after=10 "$cap" "$@" > "$WORK/$log.log" 2>&1
    local rc=$? status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timed out after ${cap} s"; elif [ $rc -ne 0 ]; then status="failed (exit $rc)"; fi
    echo "| $name | $status | $((SECONDS - t0)) |" >> "$OUT"
    echo "$name: $status ($((SECONDS - t0)) s)" >&2
}

run rehearse "make rehearse DEVICE=cuda: 11, 21, 32 (paper)" 390 \
    make rehearse DEVICE=cuda ARGS="--profiles paper --only 11 21 32 --out $WORK/rehearsal"
run amp "AMP tests" 45 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_greg_regularizer.py tests/test_train.py -k test_amp -rs
run greg "GReg step ratio" 45 \
    "$PY" benchmarks/bench_greg.py --only resnet18 densenet100 --device cuda --batch 64 --repeat 5 --out "$WORK/greg"
run sd "SD-sized generation" 100 \
    "$PY" benchmarks/bench_bood.py --only sd --sd-size full --json "$WORK/sd.json"

{
    echo
    echo "## Rehearsal (one notebook per track, paper profile, smoke mode, stand-in data)"
    echo
    cat "$WORK/rehearsal/rehearsal.md" 2>/dev/null || echo "(no table: see $WORK/rehearse.log)"
    echo
    echo "## AMP tests"
    echo
    echo '```'
    tail -n 3 "$WORK/amp.log" 2>/dev/null
    echo '```'
    echo
    echo "## GReg step ratio on CIFAR networks"
    echo
    cat "$WORK/greg.md" 2>/dev/null || echo "(no table: see $WORK/greg.log)"
    echo
    echo "## SD-sized generation (random weights: only the timing is meaningful)"
    echo
    echo '```json'
    cat "$WORK/sd.json" 2>/dev/null || echo "(no numbers: see $WORK/sd.log)"
    echo
    echo '```'
} >> "$OUT"
echo "written: $OUT (logs in $WORK)" >&2
