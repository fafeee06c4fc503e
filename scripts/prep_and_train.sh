#!/usr/bin/env bash
# The whole seed workflow in one go: validation .bin files -> memfiles, one or more training image
# folders -> one compound folder, then the seed's training recipe (scripts/train.sh).
# Usage: BIN_DIR=... TRAIN_DATASETS="folderA folderB" WORK=./all_data bash scripts/prep_and_train.sh [extra train flags]
# Extra flags go to main.py after the recipe's, so they win (e.g. --arch ir_18 --epochs 5).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN_DIR=${BIN_DIR:-./CASIA-Webface/mxnet}          # holds agedb_30.bin calfw.bin cfp_ff.bin cfp_fp.bin cplfw.bin lfw.bin
TRAIN_DATASETS=${TRAIN_DATASETS:-./dcface/imgs}    # image folders <identity>/<image>, space separated
WORK=${WORK:-./all_data}

mkdir -p "$WORK/validation"
for name in agedb_30 calfw cfp_ff cfp_fp cplfw lfw; do
    # absolute links: the seed's relative links broke as soon as the folder moved
    if [ -e "$BIN_DIR/$name.bin" ]; then ln -sfn "$(realpath "$BIN_DIR/$name.bin")" "$WORK/validation/$name.bin"; fi
done
bash "$HERE/prep_data_validation.sh" "$WORK/validation"

rm -rf "$WORK/train"
# shellcheck disable=SC2086  # TRAIN_DATASETS is a list on purpose
python "$HERE/compound_multiple_datasets.py" --list_datasets $TRAIN_DATASETS --final_path "$WORK/train/imgs"

DATA_ROOT="$WORK" TRAIN_DATA_PATH=train/imgs VAL_DATA_PATH=validation bash "$HERE/train.sh" "$@"
