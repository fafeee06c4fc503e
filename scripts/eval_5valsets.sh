#!/usr/bin/env bash
# The five high-quality sets (LFW, CFP-FP, CPLFW, CALFW, AgeDB-30; CFP-FF too when present) for one checkpoint.
# Usage: CKPT=experiments/run/best.ckpt VAL_DATA=./all_data/validation bash scripts/eval_5valsets.sh [extra flags]
# Extra flags go to `facetrain eval` (e.g. --arch ir_50 --precision bf16 --channels_last --sets lfw agedb_30).
set -euo pipefail
CKPT=${CKPT:-./pretrained/adaface_ir50_ms1mv2.ckpt}
VAL_DATA=${VAL_DATA:-./all_data/validation}      # <set>.bin files or memfiles
OUT=${OUT:-$(dirname "$CKPT")/eval_5valsets}
mkdir -p "$OUT"
facetrain eval --ckpt "$CKPT" --val_data_path "$VAL_DATA" --batch_size "${BATCH_SIZE:-256}" \
    --json "$OUT/results.json" --csv "$OUT/results.csv" "$@"
