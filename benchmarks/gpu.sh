#!/usr/bin/env bash
# One prepared GPU benchmark run (for a lent H100/H200): the Vosk VITS2 config (random weights,
# ~3 frames/token) and joe, FP32 / FP16 / BF16 / torch.compile, batch 1..32. Writes benchmarks/gpu_*.json/.md/.png.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vitsq
GPU="$(.venv/bin/python -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "-"))')"
$V bench vosk-ru-multi --device cuda,cuda-fp16,cuda-bf16,cuda-compile --batch 1,2,4,8,16,32 \
   --warmup 10 --iters 50 --machine-name "$GPU" --out "benchmarks/gpu_vosk_${GPU}.json" --no-progress --force
$V bench joe --device cuda,cuda-fp16,cuda-compile --batch 1,8,32 \
   --warmup 10 --iters 50 --machine-name "$GPU" --out "benchmarks/gpu_joe_${GPU}.json" --no-progress --force
