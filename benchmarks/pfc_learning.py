"""Partial FC learns like the full head: the demo's data and recipe (TinyNet + AdaFace, 300 synthetic
identities x 24 images, 10 epochs, batch 128, lr 0.1 with milestones 6,9, no augmentation), trained
on 2 gloo processes with the full head (DDP) and with `--partial_fc --sample_rate R`.

    python benchmarks/pfc_learning.py [--out /tmp/pfc_learning] [--sample_rate 0.3] [--epochs 10]

Prints the best validation accuracy (average of the five sets) of both runs and their difference.
Goal: Partial FC within 1 point of the full head. About 2 x 10 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from facetrain.synthetic import generate_dataset
from facetrain.training.distributed import free_port


def train(data: Path, out: Path, epochs: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "facetrain", "train", "--data_root", str(data),
           "--train_data_path", "imgs", "--val_data_path", ".", "--arch", "tinynet", "--head", "adaface",
           "--epochs", str(epochs), "--batch_size", "128", "--lr", "0.1", "--lr_milestones", "6,9", "--seed", "0",
           "--val_every", "2", "--num_workers", "1", "--gpus", "0", "--output_dir", str(out), "--no_progress",
           *extra]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/pfc_learning")
    parser.add_argument("--sample_rate", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "synth_summary.json").exists():
        generate_dataset(data, 300, 24, 0, folder=True, bins=True, pairs_per_set=600, workers=2)
    rows = {}
    for name, extra in (("full head (DDP)", []), (f"partial_fc {args.sample_rate}",
                                                  ["--partial_fc", "--sample_rate", str(args.sample_rate)])):
        result = train(data, out / name.split()[0].replace("_", ""), args.epochs, extra)
        rows[name] = result["best_val_acc"]
    print("\n| head (2 gloo processes) | best val_acc (5-set average) |\n|---|---|")
    for name, acc in rows.items():
        print(f"| {name} | {100 * acc:.2f}% |")
    full, pfc = rows.values()
    print(f"difference: {100 * (pfc - full):+.2f} points")


if __name__ == "__main__":
    main()
