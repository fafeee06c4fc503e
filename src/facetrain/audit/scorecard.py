"""`facetrain audit A B C --ckpt M --out DIR`: several datasets audited with one model, side by side.

Each dataset gets its full audit in `DIR/<name>/` and one row of `DIR/scorecard.json` / `DIR/scorecard.html`,
measured the same way for all (same model, same flip fusion, same FAR): size, consistency, diversity,
separability, uniqueness, suspected mislabels, feature-norm spread and the leakage verdicts.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from facetrain.audit.pipeline import AuditOptions, run_audit
from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_write_json
from facetrain.report.html import HtmlReport

SCORECARD_NAME = "scorecard.json"
COLUMNS = {
    "identities": "identities", "images": "images", "images_per_identity": "images per identity (min / median / max)",
    "consistency": "intra-class consistency (mean cosine to centroid)",
    "diversity_degrees": "intra-class diversity (mean pairwise angle within identities, degrees)",
    "separability": "inter-class separability: similarity to the most similar other identity (median / p05)",
    "uniqueness": "uniqueness (share of identities in no collision)",
    "mislabel_share": "suspected mislabels (share of images)",
    "feature_norm": "feature norm (median, p05 / p95)",
    "leakage": "leakage verdict per reference",
}


def dataset_names(paths: list[str | os.PathLike]) -> list[str]:
    """A folder name per dataset (the parent of an `imgs` folder), made unique with _2, _3, ..."""
    names: list[str] = []
    for p in paths:
        path = Path(p).resolve()
        base = path.parent.name if path.name == "imgs" else path.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def scorecard_row(name: str, report: dict) -> dict:
    s, intra, inter = report["summary"], report["intra_class"], report["inter_class"]["nearest_distribution"]
    ipi = s["images_per_identity"]
    return {"dataset": name, "identities": s["identities"], "images": s["images"],
            "images_per_identity": {"min": ipi["min"], "median": ipi["median"], "max": ipi["max"]},
            "consistency": intra["distribution"].get("mean"), "diversity_degrees": intra["diversity_degrees"].get("mean"),
            "separability": {"median": inter.get("p50"), "p05": inter.get("p05")},
            "uniqueness": s["uniqueness"], "mislabel_share": intra["suspected_share"],
            "feature_norm": {"median": s["feature_norm"].get("p50"), "p05": s["feature_norm"].get("p05"),
                             "p95": s["feature_norm"].get("p95")},
            "leakage": {ref: leak["verdict"] + ("" if leak["identity_level"] is None
                                                else f"; identities: {leak['identity_level']['verdict']}")
                        for ref, leak in report["leakage"].items()}}


def _cell(row: dict, key: str) -> str:
    v = row[key]
    if key == "images_per_identity":
        return f"{v['min']} / {v['median']:g} / {v['max']}"
    if key == "separability":
        return f"{v['median']:.3f} / {v['p05']:.3f}" if v["median"] is not None else "-"
    if key == "feature_norm":
        return f"{v['median']:.2f} ({v['p05']:.2f} / {v['p95']:.2f})"
    if key == "leakage":
        return "; ".join(f"{ref}: {verdict}" for ref, verdict in v.items()) or "no reference"
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def run_scorecard(paths: list[str | os.PathLike], options: AuditOptions) -> dict:
    """Audit every dataset in `paths` into `options.out_dir/<name>/`; write and return the scorecard."""
    if options.write_filtered:
        raise ConfigError("--write_filtered takes one dataset; audit the datasets one by one to filter them")
    out = Path(options.out_dir)
    rows = []
    for name, path in zip(dataset_names(paths), paths):
        report = run_audit(replace(options, data=path, out_dir=out / name))
        rows.append(scorecard_row(name, report) | {"path": str(path), "report": str(out / name / "audit.json")})
    card = {"model": str(options.checkpoint), "fusion": options.fusion, "far": options.far, "columns": COLUMNS,
            "datasets": rows}
    atomic_write_json(out / SCORECARD_NAME, card)
    page = HtmlReport("facetrain audit scorecard")
    page.text(f"Model {options.checkpoint}, flip fusion {options.fusion}, FAR {options.far}: every dataset is "
              "measured by the same model in the same way. Full reports: <name>/audit.html.")
    page.table(["dataset"] + list(COLUMNS.values()), [[r["dataset"]] + [_cell(r, k) for k in COLUMNS] for r in rows])
    page.write(out / "scorecard.html")
    return card
