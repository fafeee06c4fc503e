"""Is the training loop lean? In one run: the bare training step's img/s (the run's own model, head,
precision and optimizer on one fixed uint8 batch already in memory, no loader) against
`facetrain train` end to end on a synthetic image folder (default --num_workers, the three
augmentations at 0.2), and their ratio. Goals: >= 90% for TinyNet at batch 128, >= 95% for IR-50.

    python benchmarks/train_end_to_end.py --arch tinynet --batch_size 128 --steps 30
    python benchmarks/train_end_to_end.py --arch ir_50 --batch_size 256 --steps 60 --gpus 1 --data DIR

End-to-end img/s comes from the run's metrics.csv (data_time + step_time per batch, the first
logging interval left out: it holds the loader's start-up); the data-time share says how much of
that the step waited for the loader. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from facetrain.training.build import build_run
from facetrain.training.distributed import DistContext, pick_device, training_backends
from facetrain.training.logger import read_metrics
from facetrain.training.loop import Trainer


def make_folder(out: Path, identities: int, per_identity: int, workers: int) -> Path:
    """A synthetic image folder (<out>/imgs) made by `facetrain synth`, reused when present."""
    if not (out / "imgs").is_dir():
        subprocess.run([sys.executable, "-m", "facetrain", "synth", "--out", str(out), "--identities", str(identities),
                        "--images_per_identity", str(per_identity), "--workers", str(workers)], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def train_args(data: Path, out: Path, arch: str, batch_size: int, steps: int, log_every: int, gpus: int,
               precision: str, extra: list[str]) -> list[str]:
    return ["--data_root", str(data), "--train_data_path", "imgs", "--val_data_path", "none", "--arch", arch,
            "--batch_size", str(batch_size), "--limit_train_batches", str(steps), "--epochs", "1",
            "--log_every", str(log_every), "--gpus", str(gpus), "--precision", precision, "--output_dir", str(out),
            "--crop_augmentation_prob", "0.2", "--low_res_augmentation_prob", "0.2",
            "--photometric_augmentation_prob", "0.2", "--no_progress", *extra]


def bare_step(args_list: list[str], steps: int, gpus: int) -> float:
    """img/s of the run's own step on one fixed batch (what the loop could reach with free data)."""
    from facetrain.cli import build_parser  # the CLI's own parsing: same config as the end-to-end run
    from facetrain.training.config import config_from_args

    parser, _ = build_parser("train")
    config = config_from_args(parser.parse_args(args_list))
    config.num_workers = 0
    config.output_dir += "_bare_step"  # its own folder: the end-to-end run's folder is a finished run
    device = pick_device(gpus, 0)
    with training_backends(device):  # as the training run has them
        trainer = Trainer(build_run(config, DistContext(device=device)))
        run = trainer.run
        images, labels = next(iter(run.loader))
        images, labels = images.to(device), labels.to(device)

        def step() -> None:
            trainer.snapshot.take()
            loss = trainer.train_step(images, labels, 1, True)
            trainer.window.add_step(loss, trainer.optimizer_step(loss), trainer.nonfinite)

        for _ in range(3):
            step()
        trainer.window.collect(run.ctx)  # waits for the device
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        trainer.window.collect(run.ctx)
        return steps * run.batch_size / (time.perf_counter() - tic)


def end_to_end(args_list: list[str], batch_size: int) -> dict:
    out = Path(args_list[args_list.index("--output_dir") + 1])
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "facetrain", "train", *args_list], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tic
    rows = read_metrics(out / "metrics.csv")
    data = [r["value"] for r in rows if r["name"] == "data_time"][1:]
    step = [r["value"] for r in rows if r["name"] == "step_time"][1:]
    if not data:
        raise SystemExit("train_end_to_end: too few logging intervals; raise --steps or lower --log_every")
    per_batch = (sum(data) + sum(step)) / len(data)
    return {"img_per_sec": batch_size / per_batch, "data_time_share": sum(data) / (sum(data) + sum(step)),
            "wall_seconds_with_startup": wall}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tinynet")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="training steps (end to end and bare)")
    parser.add_argument("--log_every", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", default="", help="synthetic folder to use or create (default: a temporary one)")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images_per_identity", type=int, default=40)
    parser.add_argument("--synth_workers", type=int, default=2)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `facetrain train` flags")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_folder(Path(args.data or Path(tmp) / "data"), args.identities, args.images_per_identity,
                           args.synth_workers)
        flags = train_args(data, Path(tmp) / "run", args.arch, args.batch_size, args.steps, args.log_every,
                           args.gpus, args.precision, args.extra)
        e2e = end_to_end(flags, args.batch_size)
        bare = bare_step(flags, args.steps, args.gpus)
    result = {"arch": args.arch, "batch_size": args.batch_size, "steps": args.steps, "bare_step_img_per_sec": bare,
              "end_to_end_img_per_sec": e2e["img_per_sec"], "ratio": e2e["img_per_sec"] / bare,
              "data_time_share": e2e["data_time_share"], "threads": torch.get_num_threads()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
