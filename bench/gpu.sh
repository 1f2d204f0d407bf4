#!/usr/bin/env bash
# Training-step images/s and model FLOP utilisation of our UNet at 64x64x3 on one CUDA GPU, in a few minutes.
#
#   bench/gpu.sh                       # uses .venv (made with `make`'s test extras if absent), batch 256
#   PEAK_TFLOPS=989 BATCH=512 LIMIT=420 bench/gpu.sh
#
# What runs: bench/train_throughput.py --device cuda at 64x64x3: bf16 autocast, TF32 for what stays fp32, cuDNN
# autotuning, fused AdamW (all three as `ddpm train` sets them on CUDA), channels_last, torch.compile of our
# model (compilation is part of the warm-up; the whole run is cut at LIMIT seconds), the batch in pinned memory
# copied with non_blocking. It prints images/s of ours and of diffusers' UNet2DModel (fp32 and bf16), FLOPs per
# image, achieved TFLOP/s and model FLOP utilisation = achieved / the GPU's bf16 dense peak (looked up for
# H200, H100, A100, L40S, L4, A10; else give PEAK_TFLOPS), and the GPU's own 3x3-conv throughput.
# Without a visible CUDA GPU it stops at once with exit code 2 and measures nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "bench/gpu.sh: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this machine has no NVIDIA GPU driver; nothing measured"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi sees no GPU"

PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    make -s .venv/.installed-test >/dev/null || fail "could not create .venv (make .venv/.installed-test failed)"
    PY=.venv/bin/python
fi
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || fail "torch $("$PY" -c 'import torch; print(torch.__version__)') in $PY sees no CUDA GPU; nothing measured"

echo "$(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
timeout "${LIMIT:-360}" "$PY" bench/train_throughput.py --device cuda --size 64 --channels 3 \
    --batch-size "${BATCH:-256}" --rounds "${ROUNDS:-10}" --warmup 3 --channels-last --compile \
    --conv-shape 256,256,32 ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"}
