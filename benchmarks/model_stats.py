"""Parameters and multiply-accumulates of every backbone at 112x112 (one image), as a markdown table.

MACs are counted by torch.utils.flop_counter on the meta device (no weights are allocated,
nothing is computed), so the whole table takes seconds. They cover convolutions and linear
layers (FLOPs / 2), the usual convention; batch-norm, PReLU and additions are not included.

    python benchmarks/model_stats.py [--arch ir_50 mobilefacenet ...]
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from facetrain.models import build_model, list_models


def model_stats(name: str) -> tuple[int, int]:
    """(parameters, MACs for one 3x112x112 input)."""
    with torch.device("meta"):
        model = build_model(name).eval()
        x = torch.empty(1, 3, 112, 112)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list_models(), choices=list_models(include_aliases=True))
    args = parser.parse_args()
    print("| arch | parameters | GMACs (112x112) |")
    print("|---|---:|---:|")
    for name in args.arch:
        params, macs = model_stats(name)
        print(f"| {name} | {params:,} | {macs / 1e9:.3f} |")


if __name__ == "__main__":
    main()
