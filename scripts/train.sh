#!/usr/bin/env bash
# The seed fork's training recipe, step for step (its scripts/train.sh, Idiap 2024, MIT):
#   1. compound the two synthetic datasets (references + variants of the same identities) into
#      ./all_data/train_<task_num>/imgs with scripts/compound_multiple_datasets.py;
#   2. train IR-50 + AdaFace (m=0.4, h=0.333) on it: batch 256 on 1 GPU in fp16, 30 epochs,
#      SGD lr 0.1 x0.1 at epochs 12, 20, 26, all three augmentations at p=0.2,
#      validation from ./validation/ (or ./all_data/validation/), runs under ./experiments.
# Usage: [task_num=1] [n_ids=30000] [train_data_d1=DIR] [train_data_d2=DIR] bash scripts/train.sh [extra main.py flags]
# Extra flags go after the recipe's, so they win (e.g. --gpus 4 --batch_size 1024, or --arch ir_18).
# Paths are relative to the folder it runs in, as in the fork (run it from the repository root).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

task_num=${task_num:-1}     # task number: names ./all_data/train_<task_num> and the run prefix
n_ids=${n_ids:-30000}       # number of identities (--custom_num_class)
train_data_d1=${train_data_d1:-./sg2_n30k_ir50_r14_k10_w01_e001_it100_lang/images_arcface_112x112}  # references
train_data_d2=${train_data_d2:-./sg2_n30k_ir50_r14_disco_n64_rl14/images_arcface_112x112}           # variants

mkdir -p ./all_data
rm -rf "./all_data/train_$task_num"
mkdir "./all_data/train_$task_num"
python "$HERE/compound_multiple_datasets.py" --final_path "./all_data/train_$task_num/imgs" \
                                             --list_datasets "$train_data_d1" "$train_data_d2"

python "$HERE/../main.py" \
    --data_root ./all_data \
    --train_data_path "./all_data/train_$task_num/" \
    --val_data_path ./validation/ \
    --prefix "ir50_${task_num}_adaface" \
    --output_dir ./experiments \
    --custom_num_class "$n_ids" \
    --gpus 1 \
    --use_16bit \
    --arch ir_50 \
    --batch_size 256 \
    --num_workers 8 \
    --epochs 30 \
    --lr_milestones 12,20,26 \
    --lr 0.1 \
    --head adaface \
    --m 0.4 \
    --h 0.333 \
    --low_res_augmentation_prob 0.2 \
    --crop_augmentation_prob 0.2 \
    --photometric_augmentation_prob 0.2 \
    "$@"
