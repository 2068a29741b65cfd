#!/usr/bin/env bash
# The BU-BIL study of README "What to expect on real data": soft labels against hard-label
# baselines, losses, TTA and temperature scaling, with paired statistics.
#
#   bash studies/bubil/run.sh DATA OUT      e.g. bash studies/bubil/run.sh ../shared/data/bubil study
#
# Every step is a `softseg compare --resume` into the same OUT, so the script can be stopped
# and rerun: finished models, predictions and evaluations are skipped. Budget on a 2-core
# AVX2 CPU in fp32 (measured 2026-12-02): about 10 minutes per model (96 px, 30 epochs,
# 83 training images), less for the fractions; 21 models in all, about 3.5 hours.
# The second pooled step passes --reference twice; the last one wins.
set -euo pipefail
DATA=${1:?usage: run.sh DATA OUT}
OUT=${2:?usage: run.sh DATA OUT}
export HF_HUB_OFFLINE=1
COMMON=("$DATA" --out "$OUT" --folds 5 --seeds 0 --epochs 30 --resize 96 --crop-size 96
        --encoder-weights none --resume --no-progress --reference soft:ce)
step() { echo "=== $1 $(date -u +%H:%M:%S)"; shift; softseg compare "${COMMON[@]}" "$@" > /dev/null; }
# fold 0: every method and variant
step "fold 0" --run-folds 0 --methods soft:ce majority:ce soft:ce@tta soft:ce@ts soft:ce+dml staple:ce random_rater:ce
# folds 1-4: the main comparison (soft labels against majority vote), with the training
# fractions after fold 2 so that they are done even when a session ends early
for f in 1 2; do
    step "fold $f" --run-folds "$f" --methods soft:ce majority:ce
done
# data efficiency on fold 0
step "fractions" --run-folds 0 --fractions 0.25 0.5 1.0 --methods soft:ce majority:ce
for f in 3 4; do
    step "fold $f" --run-folds "$f" --methods soft:ce majority:ce
done
# the DML variant on folds 1-4
for f in 1 2 3 4; do
    step "fold $f dml" --run-folds "$f" --methods soft:ce soft:ce+dml
done
# all folds pooled (nothing trains: every fold's predictions are there). Each compare rewrites
# OUT's tables, so each question's tables are copied aside.
keep() { mkdir -p "$OUT/$1"; cp "$OUT"/comparison.* "$OUT"/statistics.* "$OUT"/per_fold.csv "$OUT"/paired-task01.png "$OUT/$1"/; }
step "pooled" --methods soft:ce majority:ce soft:ce+dml
keep folds0-4
step "pooled vs majority" --methods majority:ce soft:ce soft:ce+dml --reference majority:ce
keep folds0-4-vs-majority
echo "=== done; tables: $OUT/folds0-4/comparison.md, $OUT/folds0-4-vs-majority/comparison.md"
