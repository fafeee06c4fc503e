#!/usr/bin/env bash
# One GPU check: step/end-to-end/eval speed with MFU, the end-of-run and resume paths in bf16 and fp16,
# Partial FC under torchrun (NCCL on >= 2 GPUs, else 2 gloo CPU processes). Needs only torch and
# facetrain's dependencies (no install, no network). The JSON goes to stdout and to --out (written as
# it goes; --only calls add their sections to it), a one-screen summary to stderr at the end.
# `--cpu` runs the same steps tiny on the CPU (CI). Exit status 1 when any section fails.
# On a GPU machine, in two calls of under 5 minutes each (H200):
#   benchmarks/gpu_check.sh --out DIR --only step
#   benchmarks/gpu_check.sh --out DIR --only end_to_end eval short_run torchrun
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing here downloads; make sure nothing tries
exec "$python" "$here/gpu_check.py" "$@"
