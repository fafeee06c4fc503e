#!/usr/bin/env bash
# The whole seed workflow in one go, in the folder it runs in: the validation .bin files ->
# memfiles in ./all_data/validation (where the recipe's `--data_root ./all_data --val_data_path
# ./validation/` finds them), then the fork's recipe, scripts/train.sh (compound the two
# synthetic datasets into ./all_data/train_<task_num>/imgs, train).
# Usage: BIN_DIR=DIR [task_num=1] [n_ids=30000] [train_data_d1=DIR] [train_data_d2=DIR] \
#        bash scripts/prep_and_train.sh [extra main.py flags]
# task_num, n_ids, train_data_d1 and train_data_d2 reach scripts/train.sh through the environment;
# extra flags go to main.py after the recipe's, so they win (e.g. --arch ir_18 --epochs 5).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN_DIR=${BIN_DIR:-./CASIA-Webface/mxnet}    # holds agedb_30.bin calfw.bin cfp_ff.bin cfp_fp.bin cplfw.bin lfw.bin

mkdir -p ./all_data/validation
for name in agedb_30 calfw cfp_ff cfp_fp cplfw lfw; do
    # absolute links: the seed's relative links broke as soon as the folder moved
    if [ -e "$BIN_DIR/$name.bin" ]; then ln -sfn "$(realpath "$BIN_DIR/$name.bin")" "./all_data/validation/$name.bin"; fi
done
bash "$HERE/prep_data_validation.sh" ./all_data/validation

bash "$HERE/train.sh" "$@"
