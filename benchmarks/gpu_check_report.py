"""The GPU check's bookkeeping: its JSON, written after every section and step row (a call cut short
by a time limit keeps what finished; calls with `--only` add their sections to the same file), the
model FLOP utilisation (MFU) of a training step against the GPU's dense bf16 peak, and the
one-screen summary printed at the end."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from facetrain.models import build_model

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; the first name
# found in the device name wins (the more specific ones first). `--peak_tflops` overrides.
PEAK_BF16_TFLOPS = (("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
                    ("L40", 181.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0))


def peak_bf16_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def train_flops_per_image(arch: str, num_classes: int) -> float:
    """FLOPs of one image's training step: forward and backward (3x the forward's multiply-adds x 2)
    of the backbone at 112x112 and of the head's cosine matrix. Counted on the meta device (seconds)."""
    with torch.device("meta"):
        model = build_model(arch).eval()  # batch norm's batch statistics need more than one image
        x = torch.empty(1, 3, 112, 112)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return 3.0 * (counter.get_total_flops() + 2.0 * model.embedding_size * num_classes)


class Record:
    """The check's summary, saved to `path` (if any) every time it changes."""

    def __init__(self, path: Path | None, mode: str, only: list[str]):
        self.path = path
        self.data: dict = {"mode": mode, "sections": {}, "failures": []}
        if path is not None and only and path.is_file():  # a later call of a split check: keep the others
            try:
                previous = json.loads(path.read_text())
            except ValueError:
                previous = {}
            if previous.get("mode") == mode:
                self.data["sections"] = {k: v for k, v in previous.get("sections", {}).items() if k not in only}
                self.data["failures"] = [f for f in previous.get("failures", []) if f not in only]

    def set(self, name: str, result: dict) -> None:
        self.data["sections"][name] = result
        if result.get("status") == "failed" and name not in self.data["failures"]:
            self.data["failures"].append(name)
        self.save()

    def text(self) -> str:
        return json.dumps(_finite(self.data), indent=1, allow_nan=False)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.text() + "\n")
        os.replace(tmp, self.path)


def _finite(value):
    """Strict JSON: NaN/inf become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def summary_lines(data: dict, path: Path | None) -> list[str]:
    """One screen: the machine, every section's status and time, the step rows with img/s and MFU."""
    env = data.get("environment", {})
    peak = env.get("peak_bf16_tflops")
    lines = [f"gpu_check ({data['mode']}): {env.get('gpu') or env.get('cpu', '')}, torch {env.get('torch')}"
             + (f", bf16 peak {peak:g} TFLOP/s" if peak else ", MFU: bf16 peak unknown (--peak_tflops)")
             + (f"; JSON: {path}" if path else "")]
    for name, section in data["sections"].items():
        status = section.get("status", "?")
        lines.append(f"{name:<11} {status.upper():<7} {section.get('seconds', 0):>6.0f} s  {_brief(name, section)}")
        if name == "step":
            lines.append(f"  {'arch':<8}{'batch':>6} {'prec':<5}{'layout':<7}{'compile':<8}{'img/s':>9}{'MFU':>7}"
                         f"{'GiB':>7}")
            for r in section.get("rows", []):
                layout = "NHWC" if r["channels_last"] else "NCHW"
                if "error" in r:
                    lines.append(f"  {r['arch']:<8}{r['batch']:>6} {r['precision']:<5}{layout:<7}"
                                 f"{'yes' if r['compile'] else 'no':<8} error: {r['error'][:60]}")
                    continue
                mfu = f"{r['mfu']:.2f}" if r.get("mfu") is not None else "-"
                mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else "-"
                lines.append(f"  {r['arch']:<8}{r['batch']:>6} {r['precision']:<5}{layout:<7}"
                             f"{'yes' if r['compile'] else 'no':<8}{r['img_per_sec']:>9.1f}{mfu:>7}{mem:>7}")
    failed = data["failures"]
    lines.append(f"FAILED: {', '.join(failed)}" if failed else "all sections passed")
    return lines


def _brief(name: str, s: dict) -> str:
    if s.get("status") == "failed":
        return (s.get("error") or "").strip().splitlines()[-1][:100] if s.get("error") else "some rows failed"
    if name == "end_to_end" and "img_per_sec" in s:
        return (f"{s['img_per_sec']:.0f} img/s ({s['arch']}, batch {s['batch']}), data wait "
                f"{100 * s['data_time_share']:.1f}%, {s['ratio_to_bare_step']:.2f} of the bare step")
    if name == "eval":
        speeds = ", ".join(f"{k.replace('_img_per_sec', '')} {v:.0f} img/s" for k, v in s.items()
                           if k.endswith("_img_per_sec"))
        return f"{speeds}; IJB 1:1 scoring {s.get('ijb_scoring_seconds')} s"
    if name == "short_run":
        return "; ".join(f"{p}: steps {v['steps_then_resumed']} ({v.get('skipped_steps', 0)} skipped), lfw "
                         f"{v['lfw_accuracy']:.3f}" for p, v in s.items() if isinstance(v, dict))
    if name == "torchrun" and "processes" in s:
        return (f"{s['backend']}, {s['processes']} processes, Partial FC, steps {s['global_step']}"
                + (f" ({s['note']})" if s.get("note") else ""))
    if name == "step" and s.get("best"):
        b = s["best"]
        return f"best {b['img_per_sec']:.0f} img/s ({b['arch']} batch {b['batch']} {b['precision']})"
    return ""
