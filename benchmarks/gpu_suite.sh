#!/usr/bin/env bash
# Everything docs/benchmarks.md needs from a GPU machine, in one device call (< 10 min).
# Run from the repository root on the GPU machine:  bash benchmarks/gpu_suite.sh
# Results land in $OUT (the device tool's output folder) or benchmarks/results/.
set -euo pipefail
export PYTHONPATH=src
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
DATA=${DATA:-../shared/data/dsb2018-fluo}
[ -d "$DATA" ] || DATA=shared/data/dsb2018-fluo
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

# Accuracy and throughput within 120 s of training: 256x256 patches, batch 64, bf16, compiled.
python benchmarks/dsb2018.py --data "$DATA" --device cuda --time-budget 120 \
  --base-channels 32 --depth 4 --batch-size 64 --patch-size 256 --steps-per-epoch 100 \
  --learning-rate 3e-3 --compile --predict-batch 32 --json "$OUT/dsb2018_h100_120s.json" \
  2> "$OUT/dsb2018_h100_120s.log"

# Memory: an 8192x8192 image and a 64x2048x2048 volume.
python benchmarks/memory.py --device cuda --shape 8192 8192 --batch-size 16 --postprocess \
  > "$OUT/memory_2d_gpu.json"
python benchmarks/memory.py --device cuda --shape 64 2048 2048 --batch-size 4 \
  > "$OUT/memory_3d_gpu.json"
