"""Checks of a training run folder after a kill and after recovery (crash-consistency tests)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
import torch

from facetrain.checkpoint import load_checkpoint

RUN_CONFIG_KEYS = ("output_dir", "resume_from_checkpoint", "overwrite")  # differ between the runs compared
TIMINGS = ("img_per_sec", "data_time", "step_time")  # logged, but not reproducible


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _extra(checkpoint: dict) -> dict:
    return checkpoint["facetrain"]["extra"]


def check_after_kill(run: Path) -> None:
    """Every output present is complete; last.ckpt only records what the other checkpoints hold."""
    for name in ("config.json", "results.json"):
        if (run / name).exists():
            strict_json(run / name)
    if (run / "metrics.csv").exists():
        with open(run / "metrics.csv", newline="") as f:
            assert all(len(row) == 4 for row in csv.reader(f))
    if (run / "curves.png").exists():
        assert cv2.imread(str(run / "curves.png")) is not None
    checkpoints = {p.name: load_checkpoint(p) for p in run.glob("*.ckpt")}  # each loads completely
    if "last.ckpt" not in checkpoints:
        return
    last = _extra(checkpoints["last.ckpt"])
    if last["config"]["save_all_models"]:
        for epoch in range(last["epoch"]):
            assert f"epoch={epoch:02d}.ckpt" in checkpoints, f"last.ckpt is past epoch {epoch}, its copy is missing"
    if last["best"]["epoch"] >= 0:
        assert "best.ckpt" in checkpoints, "last.ckpt records a best checkpoint that is not there"
        best = _extra(checkpoints["best.ckpt"])
        recorded_step = next(h["step"] for h in last["best"]["history"] if h["val_acc"] == last["best"]["metric"])
        assert best["global_step"] >= recorded_step  # later: written just before a kill, rewritten on resume
        if best["global_step"] == recorded_step:
            assert best["best"]["metric"] == last["best"]["metric"]


def metric_rows(run: Path) -> list[tuple]:
    """(step, epoch, name, value) as logged; timings are not compared."""
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["epoch"], r["name"], None if r["name"] in TIMINGS else r["value"])
                for r in csv.DictReader(f)]


def assert_same_outputs(run: Path, reference: Path) -> None:
    """`run` (killed and recovered) holds what the uninterrupted `reference` run wrote."""
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(p.name for p in reference.iterdir())  # no temporaries either
    for name in [n for n in names if n.endswith(".ckpt")]:
        a, b = load_checkpoint(run / name), load_checkpoint(reference / name)
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), f"{name}: {key}"
        ea, eb = _extra(a), _extra(b)
        for key in ("epoch", "batch_in_epoch", "global_step", "loss_totals"):
            assert ea[key] == eb[key], f"{name}: {key}"
        assert {**ea["best"], "path": ""} == {**eb["best"], "path": ""}, name  # paths name their folders
    assert metric_rows(run) == metric_rows(reference)
    ra, rb = strict_json(run / "results.json"), strict_json(reference / "results.json")
    for key in ("best_val_acc", "best_epoch", "best_step", "global_step", "epochs_completed", "skipped_steps"):
        assert ra[key] == rb[key], key
    assert Path(ra["best_checkpoint"] or "").name == Path(rb["best_checkpoint"] or "").name
    assert ra["test"].keys() == rb["test"].keys()
    for name in ra["test"]:
        assert ra["test"][name]["accuracy"] == rb["test"][name]["accuracy"]
        assert ra["test"][name]["mean_norm"] == pytest.approx(rb["test"][name]["mean_norm"], rel=1e-5)
    ca, cb = strict_json(run / "config.json"), strict_json(reference / "config.json")
    assert {k: v for k, v in ca.items() if k not in RUN_CONFIG_KEYS} == \
        {k: v for k, v in cb.items() if k not in RUN_CONFIG_KEYS}
