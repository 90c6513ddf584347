#!/usr/bin/env bash
# Regenerate every published benchmark and evaluation table in benchmarks/ from scratch:
# builds the INT8 artifacts it measures (under out/bench/, not committed), times them against the
# FP32 originals in interleaved runs, evaluates quality on the held-out split, and writes the
# combined tables the README quotes. About three hours on a 2-core CPU.
#   benchmarks/run.sh            # CPU suite
#   benchmarks/run.sh ttfa       # only the time-to-first-audio run (step 2b and its ORT INT8 artifact; ~15 min)
#   benchmarks/run.sh tune       # only the joe recipe search (step 5; 1-1.5 h on 2 cores)
#   benchmarks/gpu.sh            # the GPU suite, on a machine with CUDA
set -euo pipefail
cd "$(dirname "$0")/.."
V="${VITSQ:-.venv/bin/vitsq}"
PY="${PYTHON:-.venv/bin/python}"
A=out/bench
B=benchmarks
THREADS="${THREADS:-1}"

# 2b. time to first audio: replies of 300 and 190 phonemes (each one utterance built from evaluation
# sentences), streamed (first chunk) vs the whole call, every variant interleaved round by round in
# one run; the baseline is the non-streamed FP32 ONNX Runtime voice. Variants that stream by
# sentences return a reply in one chunk (their TTFA is their latency): measured all the same, for
# comparison. The ExecuTorch programs take at most 400 ids per sentence (a 300-phoneme reply is 603),
# so it is measured at 190 phonemes (383 ids) and listed as failed, with that reason, at 300.
ttfa() {
  local pte=()
  [ -d $A/joe-pte-int8 ] && pte=(pte-int8=$A/joe-pte-int8)  # ExecuTorch when built (step 1)
  $V bench fp32-ort=joe@onnx fp32-torch=joe@torch ort-int8=$A/joe-ort-int8 ort-int8-fast=$A/joe-ort-int8-fast \
    "${pte[@]}" --ttfa --phonemes 300,190 --threads "$THREADS" --iters 12 --warmup 2 \
    --out $B/joe_ttfa_${THREADS}thread.json --force
  # the peer, streaming-vits, in the same process as vitsq's variants (needs the `peers` extra)
  if "$PY" -c "import streaming_vits" 2>/dev/null; then
    OMP_NUM_THREADS="$THREADS" "$PY" benchmarks/peers/ttfa_streaming_vits.py --threads "$THREADS" --rounds 6 \
      --ids 600 --int8 $A/joe-ort-int8 --int8-fast $A/joe-ort-int8-fast -o $B/joe_ttfa_peers.json --force
  else
    echo "skipping the streaming-vits peer run: pip install -e '.[peers]'" >&2
  fi
}
tune() {  # 24 trials, one at a time, each timed on one thread
  OMP_NUM_THREADS=1 $V tune joe --trials 24 --workers 1 --final-sentences 100 -o $B/tune-joe --force
}
ort_int8() {  # the two ort-static presets of joe, with their streaming graphs
  $V quantize joe --recipe ort-static --streaming -o $A/joe-ort-int8 --force
  $V quantize joe --recipe ort-static:fast --streaming -o $A/joe-ort-int8-fast --force
}
case "${1:-all}" in
  all) ;;
  # the INT8 artifact is rebuilt so it carries the streaming graphs of this vitsq version
  ttfa) ort_int8; ttfa; exit 0 ;;
  tune) tune; exit 0 ;;
  *) echo "usage: $0 [all|ttfa|tune]" >&2; exit 2 ;;
esac

# 1. artifacts: the measured presets (a recipe name means its preset)
ort_int8
$V export joe --format executorch --recipe pt2e --streaming -o $A/joe-pte-int8 --force
$V export joe --format executorch --recipe pt2e:fast --streaming -o $A/joe-pte-int8-fast --force
$V quantize vosk-ru-multi --recipe ort-static -o $A/vosk-ort-int8 --force
$V export vosk-ru-multi --format executorch --recipe pt2e -o $A/vosk-pte-int8 --force

# 2. speed: every timed round runs each variant once, in rotating order
$V bench fp32-ort=joe@onnx fp32-torch=joe@torch ort-int8=$A/joe-ort-int8 ort-int8-fast=$A/joe-ort-int8-fast \
  pte-int8=$A/joe-pte-int8 pte-int8-fast=$A/joe-pte-int8-fast --batch 1,2,4 --threads "$THREADS" --iters 40 \
  --warmup 2 --out $B/joe_cpu_${THREADS}thread.json --force
$V bench fp32-torch=vosk-ru-multi@torch ort-int8=$A/vosk-ort-int8 pte-int8=$A/vosk-pte-int8 \
  --batch 1,2,4,8 --threads "$THREADS" --iters 12 --warmup 2 --out $B/vosk_random_cpu_${THREADS}thread.json --force
ttfa
# 2c. sherpa-onnx running vitsq's Piper exports (FP32 and the size-first INT8 preset), 1 thread
$V export joe --format sherpa -o $A/joe-sherpa-fp32 --force
$V export joe --format sherpa --recipe ort-static:fast -o $A/joe-sherpa-int8 --force
$V bench fp32-ort=joe@onnx sherpa-fp32=$A/joe-sherpa-fp32@sherpa sherpa-int8=$A/joe-sherpa-int8@sherpa --threads 1 --iters 30 \
  --batch 1,2,4,8 --baseline sherpa-fp32 --out $B/joe_sherpa_1thread.json --force

# 2d. the OpenVINO + NNCF peer (FP32 and post-training INT8 configurations) next to both ort-static
# presets, interleaved, 1 thread (needs the `peers` extra)
if "$PY" -c "import openvino, nncf" 2>/dev/null; then
  OMP_NUM_THREADS=1 "$PY" benchmarks/peers/openvino_nncf.py --vitsq ort-int8=$A/joe-ort-int8 \
    --vitsq ort-int8-fast=$A/joe-ort-int8-fast -o $B/joe_openvino_peers.json --force
else
  echo "skipping the OpenVINO + NNCF peer run: pip install -e '.[peers]'" >&2
fi

# 3. quality: the 235 held-out sentences, zero noise (the only noise ONNX Runtime shares)
$V eval joe ort-int8=$A/joe-ort-int8 ort-int8-fast=$A/joe-ort-int8-fast pte-int8=$A/joe-pte-int8 \
  pte-int8-fast=$A/joe-pte-int8-fast --noise-scale 0 --noise-w 0 \
  --out $B/joe_eval_zero_noise.json --force
# 3b. what the measurement resolves: the same FP32 voice in ONNX Runtime (the original Piper file:
# other kernels, other float rounding) against FP32 PyTorch, measured the same way
$V eval joe fp32-ort=joe@onnx --noise-scale 0 --noise-w 0 --out $B/joe_eval_fp32_ort_zero_noise.json --force

# 4. the combined table (size, speed, WER, ΔWER, speaker similarity) the README quotes
$V report $B/joe_eval_zero_noise.json $B/joe_cpu_${THREADS}thread.json -o $B/joe_report --force

# 5. the recipe search on joe (benchmarks/tune-joe: trials, Pareto plot, winner on held-out sentences)
tune
