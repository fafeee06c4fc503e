"""Merge several image-folder datasets into one (e.g. a synthetic set's "references" and "variants").

Default: identity folders with the same name merge into one class; every image is renamed
`d{k}_<name>` (k = the dataset's position in the list, from 1 as in the seed's script) so files never clash. `keep_apart`
instead renames identity folders `d{k}_<identity>`, so each input keeps its own classes
(labels offset by the classes before it). Images are absolute symlinks, or copies with
`copy=True`. The result is built in a temporary folder and renamed into place, so an
interrupted run leaves nothing that looks complete; running the same command again keeps a
complete result of the same plan (output_marker) and writes the report. Inputs may be
`<x>/imgs`, `<x>` holding `imgs`, or a folder of identity folders. An output inside one of
the inputs (or an input inside the output) is refused: it would change that input.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from facetrain.data.formats.image_folder import IMGS, ImageFolder
from facetrain.errors import DataError
from facetrain.data.tools.output_marker import made_from, write_marker
from facetrain.fault_injection import write_event
from facetrain.io_utils import atomic_write_json, fresh_temporary, replace, write_bytes

REPORT_NAME = "compound_report.json"


def output_dirs(final_path: str | os.PathLike) -> tuple[Path, Path]:
    """(imgs folder, dataset root). The seed passes `.../imgs`; any other name gets an `imgs` inside."""
    final = Path(final_path)
    return (final, final.parent) if final.name == IMGS else (final / IMGS, final)


def compound_datasets(inputs: Sequence[str | os.PathLike], final_path: str | os.PathLike, copy: bool = False,
                      keep_apart: bool = False, progress: bool | None = None) -> dict:
    """Write the merged image folder and `compound_report.json` (in the dataset root); return the report."""
    if not inputs:
        raise DataError("compound: no input datasets given")
    imgs_dir, root = output_dirs(final_path)
    folders = [ImageFolder(p, require_imgs=False) for p in inputs]
    _check_separate(inputs, folders, imgs_dir)
    plan: dict[str, list[tuple[Path, str]]] = {}
    report_inputs = []
    for k, folder in enumerate(folders, start=1):
        for path, label in folder.samples:
            identity = folder.classes[label]
            target_identity = f"d{k}_{identity}" if keep_apart else identity
            plan.setdefault(target_identity, []).append((Path(path).resolve(), f"d{k}_{Path(path).name}"))
        report_inputs.append({"path": str(Path(inputs[k - 1]).resolve()), "imgs": str(folder.root.resolve()),
                              "identities": folder.num_classes - len(folder.empty_classes), "images": len(folder)})
    total = sum(map(len, plan.values()))
    recipe = {"command": "compound", "copy": copy, "keep_apart": keep_apart, "plan": _plan_digest(plan)}
    if not made_from(imgs_dir, recipe):
        _build(imgs_dir, plan, copy, recipe, total, progress)
    shared = sum(1 for files in plan.values() if len({n.split("_", 1)[0] for _, n in files}) > 1)
    report = {"mode": "keep_apart" if keep_apart else "merge", "links": "copy" if copy else "absolute symlink",
              "inputs": report_inputs,
              "result": {"path": str(imgs_dir.resolve()), "identities": len(plan), "images": total,
                         "identities_in_several_inputs": shared}}
    atomic_write_json(root / REPORT_NAME, report)
    return report


def _check_separate(inputs: Sequence[str | os.PathLike], folders: Sequence[ImageFolder], imgs_dir: Path) -> None:
    """DataError when an input is listed twice (or holds another input), which would add its images twice,
    or when the output and an input overlap."""
    roots = [folder.root.resolve() for folder in folders]
    for i, j in ((i, j) for i in range(len(roots)) for j in range(len(roots)) if i < j):
        if roots[i] == roots[j] or roots[i] in roots[j].parents or roots[j] in roots[i].parents:
            raise DataError(f"compound: {inputs[i]} and {inputs[j]} are the same dataset ({roots[i]}) or one holds "
                            "the other; merging would add their images twice: list each dataset once")
    out = imgs_dir.resolve()
    for given, folder in zip(inputs, folders):
        source = folder.root.resolve()
        if out == source or source in out.parents or out in source.parents:
            raise DataError(f"{imgs_dir}: the output is inside input {given} (or holds it); writing it would "
                            "change that input: choose a --final_path outside every input")


def _plan_digest(plan: dict[str, list[tuple[Path, str]]]) -> str:
    text = json.dumps([[identity, [[str(src), name] for src, name in plan[identity]]] for identity in sorted(plan)])
    return hashlib.sha256(text.encode()).hexdigest()


def _build(imgs_dir: Path, plan: dict[str, list[tuple[Path, str]]], copy: bool, recipe: dict, total: int,
           progress: bool | None) -> None:
    """Link or copy every image into a temporary folder, then rename it onto `imgs_dir`."""
    if imgs_dir.exists() and (not imgs_dir.is_dir() or any(imgs_dir.iterdir())):
        raise DataError(f"{imgs_dir}: already exists and is not empty; choose another --final_path or remove it")
    imgs_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temporary(imgs_dir)
    try:
        with tqdm(total=total, desc="compound", unit="img", disable=None if progress is None else not progress) as bar:
            for identity in sorted(plan):
                (tmp / identity).mkdir(parents=True)
                for src, name in plan[identity]:
                    dst = tmp / identity / name
                    if copy:
                        write_bytes(dst, src.read_bytes())
                        shutil.copystat(src, dst)
                    else:
                        write_event()
                        os.symlink(src, dst)
                    bar.update()
        if imgs_dir.exists():
            imgs_dir.rmdir()  # empty (checked above)
        write_marker(imgs_dir, recipe)
        replace(tmp, imgs_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def format_report(report: dict) -> str:
    lines = [f"compound ({report['mode']}, {report['links']}):"]
    for k, item in enumerate(report["inputs"], start=1):
        lines.append(f"  d{k}: {item['identities']:>8} identities {item['images']:>10} images  {item['imgs']}")
    res = report["result"]
    lines.append(f"  result: {res['identities']:>6} identities {res['images']:>10} images  {res['path']}")
    if report["mode"] == "merge":
        lines.append(f"  identities present in more than one input: {res['identities_in_several_inputs']}")
    return "\n".join(lines)
