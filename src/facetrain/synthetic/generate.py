"""`generate_dataset`: write a synthetic face dataset in every format the toolkit reads.

Outputs under `out_dir` (each optional): `imgs/<id_xxxxx>/<n>.jpg` (training image folder),
`train.rec` + `train.idx` + `property` (InsightFace RecordIO, the same training images),
`<benchmark>.bin` verification sets on held-out identities, `ijb/<NAME>/` (IJB-like protocol, read by
`facetrain ijb --data_root <out>/ijb --dataset_name <NAME>`), `tinyface_root/` (TinyFace's release layout
plus its aligned copy, read by `facetrain tinyface --data_root <out>/tinyface_root`), `rfw/test/` (four synthetic
groups of pairs in RFW's release layout, harder by construction from group_a to group_d, read by
`facetrain eval --rfw <out>/rfw`), and `synth_summary.json` with the
parameters, sizes and the raw-pixel baseline accuracy of each `.bin`. Each output is replaced
atomically; the old summary is removed before any output changes and the new one written last,
so a summary always describes the files beside it (an interrupted run leaves none: run it again).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Sequence

import cv2
from tqdm import tqdm

from facetrain.data.formats.bin import write_bin
from facetrain.data.formats.recordio import write_insightface_rec
from facetrain.data.formats.verification_set import MIN_PAIRS
from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_write_json, fresh_temporary, replace, write_bytes
from facetrain.synthetic.baseline import raw_pixel_accuracy
from facetrain.synthetic.groups import check_pairs_per_group, write_group_sets
from facetrain.synthetic.ijb_protocol import plan_protocol, render_ijb_image, write_ijb_protocol
from facetrain.synthetic.profiles import BENCHMARK_NAMES, PROFILES
from facetrain.synthetic.splits import identity_name, iter_training_identities, parallel_map, render_pairs
from facetrain.synthetic.tinyface_testset import plan_tinyface, render_tinyface_image, write_tinyface
from facetrain.version import __version__

TRAIN_JPEG_QUALITY = 95
SUMMARY_NAME = "synth_summary.json"


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None = automatic (off when not a terminal)."""
    return None if progress is None else not progress


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed folder into place, replacing an older one (a folder cannot be os.replace'd when full)."""
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        replace(final, old)
    replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_training(out: Path, seed: int, num_identities: int, images_per_identity: int, folder: bool, rec: bool,
                    workers: int, progress: bool | None) -> dict:
    tmp = fresh_temporary(out / "imgs")
    encoded: list[bytes] = []
    labels: list[int] = []
    stream = iter_training_identities(seed, num_identities, images_per_identity, workers)
    try:
        for label, images in enumerate(tqdm(stream, total=num_identities, desc="train identities", disable=_quiet(progress))):
            name = identity_name("train", label)
            if folder:
                (tmp / name).mkdir(parents=True)
            for n, img in enumerate(images):
                data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, TRAIN_JPEG_QUALITY])[1].tobytes()
                if folder:
                    write_bytes(tmp / name / f"{n}.jpg", data)
                if rec:
                    encoded.append(data)
                    labels.append(label)
        if rec:
            write_insightface_rec(out, encoded, labels)
        if folder:
            _replace_dir(tmp, out / "imgs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"identities": num_identities, "images": num_identities * images_per_identity,
            "image_folder": "imgs" if folder else None, "recordio": "train.rec" if rec else None}


def _write_bins(out: Path, seed: int, names: Sequence[str], pairs_per_set: int, val_identities: int | None,
                workers: int, progress: bool | None) -> dict:
    sets = {}
    for name in tqdm(names, desc="verification sets", disable=_quiet(progress)):
        images, issame, plan = render_pairs(seed, name, pairs_per_set, val_identities, workers)
        write_bin(out / f"{name}.bin", images, issame)
        sets[name] = {
            "pairs": int(len(issame)),
            "genuine": int(issame.sum()),
            "identities": int(len(set(plan.reshape(-1).tolist()))),
            "identity_prefix": identity_name(name, 0)[:-5],
            "raw_pixel_accuracy": raw_pixel_accuracy(images, issame),
        }
    return sets


def _write_groups(out: Path, seed: int, pairs_per_group: int, workers: int) -> dict:
    tmp = fresh_temporary(out / "rfw")
    try:
        summary = write_group_sets(tmp, seed, pairs_per_group, workers)
        _replace_dir(tmp, out / "rfw")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


class _IJBRenderer:  # picklable for worker processes
    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, item: tuple[int, int]):
        return render_ijb_image(self.seed, *item)


def _write_ijb(out: Path, seed: int, subjects: int, name: str, workers: int) -> dict:
    plan = plan_protocol(seed, subjects)
    rendered = list(parallel_map(_IJBRenderer(seed), [(k, im.subject) for k, im in enumerate(plan.images)], workers))
    base = write_ijb_protocol(out / "ijb", plan, [r[0] for r in rendered], [r[1] for r in rendered], seed, name)
    return {"root": str(base.relative_to(out)), "data_root": "ijb", "dataset_name": name, "subjects": subjects,
            "images": len(plan.images), "templates": int(plan.pairs[:, :2].max()),
            "pairs": int(len(plan.pairs)), "genuine_pairs": int(plan.pairs[:, 2].sum())}


class _TinyFaceRenderer:  # picklable for worker processes
    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, item: tuple[int, int]):
        return render_tinyface_image(self.seed, *item)


def _write_tinyface(out: Path, seed: int, subjects: int, distractors: int, workers: int) -> dict:
    plan = plan_tinyface(seed, subjects, distractors)
    rendered = list(parallel_map(_TinyFaceRenderer(seed), [(k, im.identity) for k, im in enumerate(plan)], workers))
    tmp = fresh_temporary(out / "tinyface_root")
    try:
        counts = write_tinyface(tmp, plan, rendered)
        _replace_dir(tmp, out / "tinyface_root")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"data_root": "tinyface_root", "subjects": subjects} | counts


def generate_dataset(out_dir: str | os.PathLike, num_identities: int = 300, images_per_identity: int = 30, seed: int = 0,
                     *, folder: bool = True, bins: bool = False, rec: bool = False, ijb: bool = False,
                     bin_names: Sequence[str] = BENCHMARK_NAMES, pairs_per_set: int = 600,
                     val_identities: int | None = None, ijb_subjects: int = 40, ijb_name: str = "IJBC",
                     tinyface: bool = False, tinyface_subjects: int = 40, tinyface_distractors: int = 200,
                     rfw: bool = False, rfw_pairs: int = 600, workers: int = 1, progress: bool | None = None) -> dict:
    """Write the requested outputs and `synth_summary.json`; returns the summary. Same arguments, same bytes."""
    unknown = [n for n in bin_names if n not in BENCHMARK_NAMES]
    if unknown:
        raise ConfigError(f"unknown verification set names {unknown}; choose from {list(BENCHMARK_NAMES)}")
    if (folder or rec) and (num_identities < 1 or images_per_identity < 1):
        raise ConfigError(f"need at least 1 identity and 1 image each, got {num_identities} x {images_per_identity}")
    if bins and pairs_per_set < MIN_PAIRS:
        raise ConfigError(f"pairs_per_set must be >= {MIN_PAIRS} (the 10-fold protocol; half genuine, half "
                          f"impostor), got {pairs_per_set}")
    if tinyface and (tinyface_subjects < 1 or tinyface_distractors < 0):
        raise ConfigError(f"TinyFace needs >= 1 subject and >= 0 distractors, got {tinyface_subjects} and {tinyface_distractors}")
    if tinyface and importlib.util.find_spec("scipy") is None:
        raise ConfigError("a synthetic TinyFace writes the release's .mat lists with scipy: pip install 'facetrain[tinyface]'")
    if rfw:
        check_pairs_per_group(rfw_pairs)
    if ijb_name.upper() not in ("IJBB", "IJBC"):
        raise ConfigError(f"ijb_name must be IJBB or IJBC (the evaluator's file prefixes), got {ijb_name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_NAME).unlink(missing_ok=True)
    summary: dict = {
        "generator": f"facetrain {__version__} synthetic faces",
        "seed": seed,
        "params": {"num_identities": num_identities, "images_per_identity": images_per_identity,
                   "pairs_per_set": pairs_per_set, "val_identities": val_identities,
                   "ijb_subjects": ijb_subjects, "tinyface_subjects": tinyface_subjects,
                   "tinyface_distractors": tinyface_distractors, "rfw_pairs": rfw_pairs, "profiles": {k: vars(v) for k, v in PROFILES.items()}},
    }
    if folder or rec:
        summary["train"] = _write_training(out, seed, num_identities, images_per_identity, folder, rec, workers, progress)
    if bins:
        summary["verification_sets"] = _write_bins(out, seed, bin_names, pairs_per_set, val_identities, workers, progress)
    if ijb:
        summary["ijb"] = _write_ijb(out, seed, ijb_subjects, ijb_name.upper(), workers)
    if tinyface:
        summary["tinyface"] = _write_tinyface(out, seed, tinyface_subjects, tinyface_distractors, workers)
    if rfw:
        summary["rfw"] = _write_groups(out, seed, rfw_pairs, workers)
    atomic_write_json(out / SUMMARY_NAME, summary)
    return summary
