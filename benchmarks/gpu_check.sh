#!/usr/bin/env bash
# One GPU check (<= 8 minutes on one H100/H200-class GPU): step/end-to-end/eval speed, the end-of-run
# and resume paths in bf16 and fp16, torchrun with NCCL on 2 GPUs; a JSON summary on stdout (and in
# benchmarks/results/). `--cpu` runs the same steps tiny on the CPU (CI). No network needed.
# Exit status 1 when any section fails. See benchmarks/gpu_check.py for the sections.
#   benchmarks/gpu_check.sh [--cpu] [--out FILE] [--only step end_to_end eval short_run torchrun]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing here downloads; make sure nothing tries
exec "$python" "$here/gpu_check.py" "$@"
