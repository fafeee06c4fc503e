#!/usr/bin/env bash
# DCFace release -> image folder for training.
# The release holds record/ with train.rec, train.idx and list.txt (relative paths <identity>/<n>.jpg);
# this writes $DCFACE_DIR/imgs/<identity>/<n>.jpg. Train with --data_root $(dirname $DCFACE_DIR)
# --train_data_path $(basename $DCFACE_DIR)/imgs (check the class count with `facetrain info $DCFACE_DIR/imgs`).
set -euo pipefail
DCFACE_DIR=${1:-${DCFACE_DIR:-./dcface_0.5m}}
facetrain convert --rec_path "$DCFACE_DIR" --make_image_files "${@:2}"
facetrain info "$DCFACE_DIR/imgs" --quick
