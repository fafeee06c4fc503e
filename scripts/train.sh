#!/usr/bin/env bash
# The seed's training recipe: IR-50 + AdaFace (m=0.4, h=0.333), all augmentations at p=0.2,
# SGD lr 0.1 with x0.1 at epochs 12, 20, 26, 30 epochs, total batch 512.
# Usage: bash scripts/train.sh [extra flags...]   (paths and sizes from the variables below or the environment)
# Several GPUs: GPUS=4 bash scripts/train.sh  (or torchrun --nproc_per_node 4 main.py ... yourself)
set -euo pipefail
DATA_ROOT=${DATA_ROOT:-./all_data}
TRAIN_DATA_PATH=${TRAIN_DATA_PATH:-train/imgs}
VAL_DATA_PATH=${VAL_DATA_PATH:-validation}
NUM_CLASS=${NUM_CLASS:--1}          # identities; -1 = count them from the folders
PREFIX=${PREFIX:-ir50_adaface}
GPUS=${GPUS:-1}
BATCH_SIZE=${BATCH_SIZE:-512}
NUM_WORKERS=${NUM_WORKERS:-8}

python "$(dirname "$0")/../main.py" \
    --data_root "$DATA_ROOT" \
    --train_data_path "$TRAIN_DATA_PATH" \
    --val_data_path "$VAL_DATA_PATH" \
    --custom_num_class "$NUM_CLASS" \
    --prefix "$PREFIX" \
    --gpus "$GPUS" \
    --use_16bit \
    --arch ir_50 \
    --batch_size "$BATCH_SIZE" \
    --num_workers "$NUM_WORKERS" \
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
