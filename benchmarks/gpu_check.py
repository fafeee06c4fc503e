"""One GPU check for facetrain (driver of benchmarks/gpu_check.sh): speed figures and the GPU code
paths on a GPU machine with nothing installed but torch and facetrain's dependencies, summarised as
JSON (written after every section and step row, so a call cut short keeps what finished) and as
one screen of text at the end (img/s and MFU per step row, pass/fail per section).

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out DIR --only step              # each call < 5 min (H200)
    PYTHONPATH=src python3 benchmarks/gpu_check.py --out DIR --only end_to_end eval short_run torchrun
    PYTHONPATH=src python3 benchmarks/gpu_check.py --cpu --out DIR   # the same steps, tiny, on the CPU (CI)

Sections (each timed; a failure is printed with its traceback and makes the exit status 1; calls
with --only add their sections to the JSON already in DIR):
- step: IR-50 / IR-101 training step img/s at batch 128/256/512, fp16 (GradScaler) and bf16,
  channels_last on/off, torch.compile on/off (IR-50 at batch 256 with channels_last only: each
  compilation costs about a minute), peak memory, MFU; a row that fails (OOM, compilation) is recorded
  as such and the others still run;
- end_to_end: `facetrain synth --workers` makes a >= 50,000-image folder, then `facetrain train`
  IR-50 batch 256 for a fixed number of steps: img/s, data-time share, the bare step for the ratio;
- eval: embedding img/s (image + flip) in fp32 and bf16, TF32 on/off difference of fp32 embeddings,
  and the time of IJB-C-size 1:1 scoring (23,124 templates, 15.7M pairs; numpy on the CPU);
- short_run: 2 tiny epochs with validation sets, the final test, results.json, then a resume from
  last.ckpt, in bf16 and in fp16 (fp32 in --cpu mode: fp16 needs a GPU);
- torchrun: the short run with Partial FC under `torchrun` (3 steps per epoch, data sized from the
  number of processes), then resumed: NCCL on every visible GPU (at most 8) when there are >= 2,
  else 2 gloo processes on the CPU (DDP and Partial FC without NCCL; said so in the summary).
Nothing is downloaded: every input is generated here. stdout carries the JSON only (everything else,
the `facetrain` and torchrun child processes included, goes to stderr).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_end_to_end import bare_step, end_to_end, make_folder, train_args  # noqa: E402
from train_throughput import cpu_features, measure  # noqa: E402
from gpu_check_report import Record, peak_bf16_tflops, summary_lines, train_flops_per_image  # noqa: E402

from facetrain.cli import main as facetrain_main  # noqa: E402
from facetrain.errors import one_line  # noqa: E402
from facetrain.eval.embed import extract_features  # noqa: E402
from facetrain.eval.ijb_verify import score_pairs, verification_metrics  # noqa: E402
from facetrain.models import build_model  # noqa: E402
from facetrain.training.distributed import free_port, training_backends  # noqa: E402
from facetrain.precision import resolve_precision  # noqa: E402

GPU_PLAN = {
    "archs": ["ir_50", "ir_101"], "batches": [128, 256, 512], "precisions": ["fp16", "bf16"], "compile_batch": 256,
    "compile_archs": ["ir_50"], "steps": 10, "warmup": 3, "num_classes": 10000,
    "synth_identities": 2000, "synth_per_identity": 25, "e2e_arch": "ir_50", "e2e_batch": 256, "e2e_steps": 120,
    "e2e_log_every": 20, "eval_images": 20000, "eval_archs": ["ir_50"], "ijb_templates": 23124,
    "ijb_pairs": 15_658_590, "short_arch": "ir_18", "short_precisions": ["bf16", "fp16"], "short_batch": 64,
    "threads": 0, "short_workers": -1, "torchrun_cpu_batch": 16,  # 0 / -1: the defaults
}
CPU_PLAN = {
    "archs": ["tinynet"], "batches": [8], "precisions": ["bf16"], "compile_batch": 8, "compile_archs": ["tinynet"],
    "steps": 2, "warmup": 1, "num_classes": 100,
    "synth_identities": 8, "synth_per_identity": 8, "e2e_arch": "tinynet", "e2e_batch": 16, "e2e_steps": 4,
    "e2e_log_every": 1, "eval_images": 64, "eval_archs": ["tinynet"], "ijb_templates": 500, "ijb_pairs": 20000,
    "short_arch": "tinynet", "short_precisions": ["bf16", "fp32"], "short_batch": 16,
    "threads": 1, "short_workers": 0, "torchrun_cpu_batch": 8,  # CI machines are small and shared: no oversubscription
}


SECTIONS = ("step", "end_to_end", "eval", "short_run", "torchrun")


class Check:
    """Runs named sections and records their results, times and failures as they finish."""

    def __init__(self, record: Record):
        self.record = record

    def section(self, name: str, fn: Callable[[], dict]) -> None:
        tic = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        self.record.set(name, {"status": "running"})
        try:
            result = fn()
            status = "failed" if result.pop("failed_rows", 0) else "ok"
        except (Exception, SystemExit):  # a benchmark's SystemExit too: the other sections still run
            result, status = {"error": traceback.format_exc(limit=6)}, "failed"
            traceback.print_exc()
        result.update(status=status, seconds=round(time.perf_counter() - tic, 1))
        self.record.set(name, result)


def step_grid(plan: dict, device: torch.device, peak_tflops: float | None, progress: Callable[[dict], None]) -> dict:
    rows, failed = [], 0
    flops_per_image = {arch: train_flops_per_image(arch, plan["num_classes"]) for arch in plan["archs"]}
    for arch in plan["archs"]:
        flops = flops_per_image[arch]
        for batch in plan["batches"]:
            for precision in plan["precisions"]:
                for channels_last in (True, False):
                    compiled = batch == plan["compile_batch"] and channels_last and arch in plan["compile_archs"]
                    for compile_ in [False] + ([True] if compiled else []):
                        row = {"arch": arch, "batch": batch, "precision": precision, "channels_last": channels_last,
                               "compile": compile_}
                        try:
                            row.update(_step_row(plan, device, row, flops, peak_tflops))
                        except Exception as exc:  # OOM, a compilation failure: the other rows still run
                            row["error"], failed = one_line(exc), failed + 1
                            traceback.print_exc()
                        finally:
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
                        rows.append(row)
                        print(f"[gpu_check]   {row}", file=sys.stderr, flush=True)
                        progress({"rows": rows, "status": "running"})
    measured = [r for r in rows if "img_per_sec" in r]
    return {"rows": rows, "best": max(measured, key=lambda r: r["img_per_sec"]) if measured else None,
            "train_flops_per_image": flops_per_image,
            "failed_rows": failed}


def _step_row(plan: dict, device: torch.device, row: dict, flops: float, peak_tflops: float | None) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with training_backends(device):
        speed = measure(row["arch"], row["precision"], row["channels_last"], row["compile"], row["batch"], device,
                        plan["steps"], plan["warmup"], plan["num_classes"])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    mfu = speed * flops / (peak_tflops * 1e12) if peak_tflops else None
    return {"img_per_sec": round(speed, 1), "mfu": mfu and round(mfu, 3), "peak_memory_gib": peak and round(peak, 2)}


def end_to_end_section(plan: dict, work: Path, gpus: int, workers: int) -> dict:
    tic = time.perf_counter()
    data = make_folder(work / "synth", plan["synth_identities"], plan["synth_per_identity"], workers)
    synth_seconds = time.perf_counter() - tic
    images = sum(1 for _ in (data / "imgs").rglob("*.*"))
    flags = train_args(data, work / "e2e_run", plan["e2e_arch"], plan["e2e_batch"], plan["e2e_steps"],
                       plan["e2e_log_every"], gpus, "auto", [])
    e2e = end_to_end(flags, plan["e2e_batch"])
    bare = bare_step(flags, max(plan["e2e_steps"] // 4, 2), gpus)
    return {"synthetic_images": images, "synth_seconds": round(synth_seconds, 1), "synth_workers": workers,
            "arch": plan["e2e_arch"], "batch": plan["e2e_batch"], "steps": plan["e2e_steps"],
            "img_per_sec": round(e2e["img_per_sec"], 1), "data_time_share": round(e2e["data_time_share"], 4),
            "bare_step_img_per_sec": round(bare, 1), "ratio_to_bare_step": round(e2e["img_per_sec"] / bare, 3),
            "gpu_busy_estimate": round(min(1.0, e2e["img_per_sec"] / bare), 3)}


def eval_section(plan: dict, device: torch.device) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (plan["eval_images"], 112, 112, 3), dtype=np.uint8)
    out: dict = {"images": len(images)}
    for arch in plan["eval_archs"]:
        torch.manual_seed(0)
        model = build_model(arch).to(device).eval()
        for precision in ("fp32", "bf16"):
            extract_features(model, images[:256], batch_size=512, device=device, precision=precision, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            feats, _ = extract_features(model, images, batch_size=512, device=device, precision=precision,
                                        progress=False)
            out[f"{arch}_{precision}_img_per_sec"] = round(len(images) / (time.perf_counter() - tic), 1)
        if device.type == "cuda":  # what TF32 convolutions change in "fp32" embeddings
            saved = torch.backends.cudnn.allow_tf32
            try:
                torch.backends.cudnn.allow_tf32 = False
                strict, _ = extract_features(model, images[:1024], device=device, progress=False)
            finally:
                torch.backends.cudnn.allow_tf32 = saved
            tf32, _ = extract_features(model, images[:1024], device=device, progress=False)
            unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)  # noqa: E731
            out[f"{arch}_tf32_max_cosine_change"] = float(np.max(1 - np.sum(unit(strict) * unit(tf32), axis=1)))
    templates, pairs = plan["ijb_templates"], plan["ijb_pairs"]
    feats = rng.standard_normal((templates, 512)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    rows1, rows2 = rng.integers(0, templates, pairs), rng.integers(0, templates, pairs)
    labels = (rng.random(pairs) < 0.00125).astype(np.int64)  # IJB-C: 19,557 genuine of 15.66M
    tic = time.perf_counter()
    scores = score_pairs(feats.astype(np.float64), rows1, rows2, progress=False)
    metrics = verification_metrics(scores, labels)
    out.update(ijb_templates=templates, ijb_pairs=pairs, ijb_scoring_seconds=round(time.perf_counter() - tic, 2),
               ijb_scoring_device="cpu (numpy)", ijb_auc_random=round(metrics["auc"], 3))
    return out


def short_run_section(plan: dict, work: Path, gpus: int) -> dict:
    data = work / "short_data"
    if not (data / "imgs").is_dir():
        _cli(["synth", "--out", str(data), "--identities", "16", "--images_per_identity", "12", "--bins",
              "--bin_names", "lfw", "cfp_fp", "--pairs_per_set", "60", "--workers", "2"])
    out: dict = {}
    for precision in plan["short_precisions"]:
        run = work / f"short_{precision}"
        base = ["--data_root", str(data), "--train_data_path", "imgs", "--val_data_path", ".", "--arch",
                plan["short_arch"], "--batch_size", str(plan["short_batch"]), "--gpus", str(gpus), "--no_progress",
                "--limit_train_batches", "3", "--log_every", "1", "--output_dir", str(run),
                "--num_workers", str(plan["short_workers"]),
                "--crop_augmentation_prob", "0.2", "--low_res_augmentation_prob", "0.2",
                "--photometric_augmentation_prob", "0.2"]
        precision_flags = ["--use_16bit"] if precision == "fp16" else ["--precision", precision]
        _cli(["train", *base, *precision_flags, "--epochs", "2"])
        first = json.loads((run / "results.json").read_text())
        _cli(["train", *base, *precision_flags, "--epochs", "3", "--resume_from_checkpoint", str(run / "last.ckpt")])
        resumed = json.loads((run / "results.json").read_text())
        if not (first["global_step"] == 6 and resumed["global_step"] == 9 and "lfw" in resumed["test"]):
            raise AssertionError(f"{precision}: unexpected results {first} / {resumed}")
        devices = _tensor_devices(torch.load(run / "last.ckpt", weights_only=True))  # where they were saved
        if devices != {"cpu"}:
            raise AssertionError(f"{precision}: last.ckpt holds tensors on {sorted(devices)}, not only the CPU")
        out[precision] = {"steps_then_resumed": [first["global_step"], resumed["global_step"]],
                          "skipped_steps": resumed["skipped_steps"],
                          "test_average_accuracy": resumed["test"].get("average", {}).get("accuracy"),
                          "lfw_accuracy": resumed["test"]["lfw"]["accuracy"]}
    return out


def _tensor_devices(obj) -> set[str]:
    if isinstance(obj, torch.Tensor):
        return {obj.device.type}
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return set().union(*(_tensor_devices(v) for v in values))


def torchrun_section(plan: dict, work: Path, cpu_mode: bool) -> dict:
    """Partial FC under torchrun: NCCL on the visible GPUs (>= 2), else 2 gloo processes on the CPU.
    The data holds 3 batches per process and epoch whatever the number of processes."""
    gpus = 0 if cpu_mode else min(torch.cuda.device_count(), 8)
    nccl = gpus >= 2
    world, per_rank = (gpus, plan["short_batch"]) if nccl else (2, plan["torchrun_cpu_batch"])
    arch = plan["short_arch"] if nccl else "tinynet"
    per_identity = 12
    identities = max(8, -(-3 * world * per_rank // per_identity) + 1)
    data, run = work / f"torchrun_data_{world}x{per_rank}", work / "torchrun"
    if not (data / "imgs").is_dir():
        _cli(["synth", "--out", str(data), "--identities", str(identities), "--images_per_identity",
              str(per_identity), "--bins", "--bin_names", "lfw", "--pairs_per_set", "60", "--workers", "2"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "facetrain", "train", "--data_root", str(data),
           "--train_data_path", "imgs", "--val_data_path", ".", "--arch", arch, "--partial_fc",
           "--batch_size", str(world * per_rank), "--gpus", "1" if nccl else "0", "--no_progress",
           "--limit_train_batches", "3", "--log_every", "1", "--num_workers", str(plan["short_workers"]),
           "--output_dir", str(run), "--epochs", "2"]
    env = {**os.environ, **({} if nccl else {"OMP_NUM_THREADS": "1"})}
    subprocess.run(cmd, check=True, timeout=600, env=env)
    first = json.loads((run / "results.json").read_text())
    resumed = cmd[:-1] + ["3", "--resume_from_checkpoint", str(run / "last.ckpt")]
    resumed[resumed.index("--master_port") + 1] = str(free_port())
    subprocess.run(resumed, check=True, timeout=600, env=env)
    results = json.loads((run / "results.json").read_text())
    if (first["global_step"], results["global_step"]) != (6, 9) or "lfw" not in results["test"]:
        raise AssertionError(f"torchrun: unexpected results {first} / {results}")
    note = "" if nccl or cpu_mode else f"{torch.cuda.device_count()} GPU visible: NCCL needs >= 2, not exercised"
    return {"backend": "nccl" if nccl else "gloo", "processes": world, "batch_per_process": per_rank,
            "steps_then_resumed": [first["global_step"], results["global_step"]],
            "global_step": results["global_step"], "lfw_accuracy": results["test"]["lfw"]["accuracy"], "note": note}


def _cli(argv: list[str]) -> None:
    code = facetrain_main(argv)
    if code != 0:
        raise RuntimeError(f"facetrain {' '.join(argv)} exited with {code}")


def environment(device: torch.device, peak_tflops: float | None) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "cpu": cpu_features(), "cpus": os.cpu_count(),
           "auto_precision": resolve_precision("auto", device), "peak_bf16_tflops": peak_tflops,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count(),
                   cuda=torch.version.cuda, capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the same steps, tiny, on the CPU")
    parser.add_argument("--out", default="", help="folder for the JSON (gpu_check_<device>.json), or a .json file "
                                                  "(default: benchmarks/results/; none in --cpu mode)")
    parser.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    parser.add_argument("--only", nargs="+", default=[], choices=SECTIONS, help="run only these sections")
    parser.add_argument("--peak_tflops", type=float, default=0.0,
                        help="the GPU's dense bf16 peak for MFU (default: from the device name)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (use --cpu for the CPU rehearsal)", file=sys.stderr)
        return 1
    json_stdout = os.fdopen(os.dup(1), "w")
    saved_stdout = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)  # every other write to stdout, child processes' too, goes to stderr
    try:
        return _check(args, json_stdout)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        json_stdout.close()


def _check(args: argparse.Namespace, json_stdout) -> int:
    plan, gpus = (CPU_PLAN, 0) if args.cpu else (GPU_PLAN, 1)
    if plan["threads"]:
        torch.set_num_threads(plan["threads"])
        os.environ["OMP_NUM_THREADS"] = str(plan["threads"])  # for the `facetrain` subprocesses
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    name = "cpu" if args.cpu else _slug(torch.cuda.get_device_name(0))
    peak = args.peak_tflops or (None if args.cpu else peak_bf16_tflops(torch.cuda.get_device_name(0)))
    out = Path(args.out) if args.out else (None if args.cpu else HERE / "results")
    if out is not None and out.suffix != ".json":
        out = out / f"gpu_check_{name}.json"
    record = Record(out, "cpu" if args.cpu else "gpu", args.only)
    record.data["environment"] = environment(device, peak)
    check = Check(record)
    workers = max(1, min(16, len(os.sched_getaffinity(0)))) if hasattr(os, "sched_getaffinity") else 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    sections = {
        "step": lambda: step_grid(plan, device, peak, lambda partial: record.set("step", partial)),
        "end_to_end": lambda: end_to_end_section(plan, work, gpus, workers),
        "eval": lambda: eval_section(plan, device),
        "short_run": lambda: short_run_section(plan, work, gpus),
        "torchrun": lambda: torchrun_section(plan, work, args.cpu),
    }
    try:
        for section, fn in sections.items():
            if not args.only or section in args.only:
                check.section(section, fn)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(record.text(), file=json_stdout, flush=True)
    print("\n".join(summary_lines(record.data, out)), file=sys.stderr, flush=True)
    return 1 if record.data["failures"] else 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


if __name__ == "__main__":
    sys.exit(main())
