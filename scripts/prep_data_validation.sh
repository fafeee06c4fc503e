#!/usr/bin/env bash
# Every .bin verification set in a folder (agedb_30, calfw, cfp_ff, cfp_fp, cplfw, lfw from the
# InsightFace dataset zoo) -> memfiles (<name>.dat + .conf + <name>_list.npy) in the same folder.
# Usage: bash scripts/prep_data_validation.sh [VALIDATION_DIR]   (then --val_data_path points there)
set -euo pipefail
VAL_DIR=${1:-${VAL_DIR:-./all_data/validation}}
facetrain convert --rec_path "$VAL_DIR" --make_validation_memfiles "${@:2}"
facetrain info "$VAL_DIR" --quick
