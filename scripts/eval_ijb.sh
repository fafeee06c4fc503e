#!/usr/bin/env bash
# IJB-B / IJB-C 1:1 verification (TAR@FAR table, ROC) and 1:N identification for one checkpoint.
# DATA_ROOT holds IJBC/loose_crop + IJBC/meta (insightface/AdaFace layout) or meta/IJBC_meta + ijb/IJBC/loose_crop.
# Usage: CKPT=... DATA_ROOT=... DATASET=IJBB bash scripts/eval_ijb.sh [extra flags]
# e.g. insightface's N1D1F2 mode: bash scripts/eval_ijb.sh --use_norm_score true --use_detector_score true
set -euo pipefail
CKPT=${CKPT:-./pretrained/adaface_ir50_ms1mv2.ckpt}
DATA_ROOT=${DATA_ROOT:-./IJB/insightface_helper/ijb}
DATASET=${DATASET:-IJBC}
OUT=${OUT:-./result/$DATASET/$(basename "$CKPT" .ckpt)}
facetrain ijb --data_root "$DATA_ROOT" --dataset_name "$DATASET" --ckpt_path "$CKPT" --output_dir "$OUT" \
    --batch_size "${BATCH_SIZE:-128}" --fusion_method "${FUSION:-pre_norm_vector_add}" --use_flip_test "${FLIP:-true}" "$@"
