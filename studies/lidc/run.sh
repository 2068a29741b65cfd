#!/usr/bin/env bash
# The LIDC-IDRI study of docs/lidc.md: softseg's methods and the SSN peer on one patient-level
# split, scored in the field's terms (D²_GED over 16 and 100 hypotheses, HM-IoU) and softseg's.
#
#   bash studies/lidc/run.sh DATA OUT      e.g. bash studies/lidc/run.sh ../shared/data/lidc lidc-study
#
# One `softseg compare --resume` into OUT: stopped and rerun, it skips finished models,
# predictions and evaluations and resumes an interrupted training from its last epoch.
# Budget (measured 2026-12-07, 2-core AVX2 CPU, fp32): 3 epochs over 4,342 training slices at
# 128 px, batch 8, no augmented copies, no pretrained encoder; about 15 minutes a model.
set -euo pipefail
DATA=${1:?usage: run.sh DATA OUT}
OUT=${2:?usage: run.sh DATA OUT}
HERE=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"
[ -f "$OUT/split.csv" ] || python "$HERE/split.py" "$DATA" "$OUT/split.csv"
softseg compare "$DATA" --out "$OUT/compare" --split-csv "$OUT/split.csv" \
    --methods soft:ce+dml majority:ce+dml ssn soft:ce majority:ce random_rater:ce \
    --seeds 0 --epochs 3 --crop-size 128 --encoder-weights none --config "$HERE/lidc.yaml" \
    --samples 16 100 --resume --no-progress
# stratified against random levels, on the default method's held-out maps
python "$HERE/level_sets.py" "$OUT/compare/soft-ce+dml/seed0/predictions" "$DATA" --n 16 --draws 20 \
    --out "$OUT/level_sets.json"
