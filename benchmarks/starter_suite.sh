#!/usr/bin/env bash
# Figures for the built-in starter (docs/benchmarks.md): zero-shot test AP and prediction speed
# with `live-unet predict`, then few-shot runs from scratch and from the starter, plain and on
# an inverted-RGB stand-in for a new modality. Run from the repository root on a quiet machine:
#   PYTHONPATH=src bash benchmarks/starter_suite.sh OUT_DIR
set -euo pipefail
OUT=${1:-benchmarks/results/starter}
D=${DATA:-../shared/data/dsb2018-fluo}
BUDGET=${BUDGET:-300}
mkdir -p "$OUT"
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*avx512_bf16.*/Flags: ... avx512_bf16 .../' > "$OUT/cpu.txt"
for run in 1 2 3; do
  rm -rf "$OUT/pred"
  python -m napari_live_unet.cli predict --model nuclei --images "$D/test/images" \
      --out "$OUT/pred" --device cpu 2>/dev/null | tee "$OUT/predict_$run.txt"
done
python -m napari_live_unet.cli evaluate --labels "$D/test/labels" --pred "$OUT/pred" \
    | tee "$OUT/zero_shot_evaluate.txt"
for start in scratch nuclei; do
  for variant in plain inverted-rgb; do
    python benchmarks/few_shot.py --data "$D" --start "$start" --variant "$variant" \
        --time-budget "$BUDGET" --json "$OUT/few_shot_${start}_${variant}.json" \
        > "$OUT/few_shot_${start}_${variant}.log" 2>&1
    tail -1 "$OUT/few_shot_${start}_${variant}.log"
  done
done
python benchmarks/few_shot.py --data "$D" --start nuclei --variant inverted-rgb --all-channels \
    --time-budget "$BUDGET" --json "$OUT/few_shot_nuclei_inverted-rgb_all-channels.json" \
    > "$OUT/few_shot_nuclei_inverted-rgb_all-channels.log" 2>&1
tail -1 "$OUT/few_shot_nuclei_inverted-rgb_all-channels.log"
