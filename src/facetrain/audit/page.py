"""`audit.html`: one self-contained page (tables, histograms and face grids embedded as base64 PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facetrain.audit.figures import cosine_histograms, face_rows
from facetrain.audit.identities import IdentityStats
from facetrain.audit.sources import AuditSet
from facetrain.report.html import HtmlReport

GRID_ROWS = 10
FACES_PER_SIDE = 4


def _identity_images(data: AuditSet, stats: IdentityStats, row: int, count: int, typical: bool = False) -> list[np.ndarray]:
    """Up to `count` images of an identity, least typical (lowest cosine to its centroid) first, or most typical
    first (exemplars)."""
    members = np.flatnonzero(data.labels == stats.labels[row])
    members = members[np.argsort(-stats.image_to_centroid[members] if typical else stats.image_to_centroid[members],
                                 kind="stable")]
    return [data.read(int(i)) for i in members[:count]]


def write_figures(report: dict, data: AuditSet, stats: IdentityStats, references: dict[str, AuditSet],
                  nearest: dict[str, np.ndarray], leak_pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                  least_rows: np.ndarray, pair_rows: list[tuple[int, int]], figures: Path) -> dict[str, Path]:
    """Write the PNGs the page shows; returns name -> path. `nearest`: each reference image's best training
    cosine; `leak_pairs`: (reference, training) image indices best first; rows index `stats`."""
    figures.mkdir(parents=True, exist_ok=True)
    threshold = report["threshold"]["value"]
    out: dict[str, Path] = {}
    intra = np.array([p["consistency"] for p in report["intra_class"]["per_identity"]])
    inter = np.array([p["similarity"] for p in report["inter_class"]["nearest"]])
    out["similarity"] = figures / "identity_similarity.png"
    cosine_histograms({"intra: cosine of an identity's images to its centroid (mean)": intra,
                       "inter: similarity to the most similar other identity": inter}, threshold, out["similarity"],
                      "identity similarity", "cosine")
    if nearest:
        out["leakage"] = figures / "leakage_similarity.png"
        cosine_histograms(nearest, threshold, out["leakage"], "reference images: cosine to the nearest training image",
                          "cosine")
    out["least_consistent"] = figures / "least_consistent.png"
    face_rows([_identity_images(data, stats, r, 2 * FACES_PER_SIDE) for r in least_rows[:GRID_ROWS]],
              out["least_consistent"])
    suspects = report["intra_class"]["suspected_mislabels"][:GRID_ROWS]
    if suspects:
        index = {data.image_name(i): i for i in range(len(data))}
        row_of = {data.class_name(label): r for r, label in enumerate(stats.labels)}
        out["mislabels"] = figures / "suspected_mislabels.png"
        face_rows([[data.read(index[m["image"]]), None] + _identity_images(data, stats, row_of[m["identity"]], 3, True)
                   + [None] + _identity_images(data, stats, row_of[m["nearest_identity"]], 3, True) for m in suspects],
                  out["mislabels"])
    if pair_rows:
        out["collisions"] = figures / "collisions.png"
        face_rows([_identity_images(data, stats, a, FACES_PER_SIDE) + [None] + _identity_images(data, stats, b, FACES_PER_SIDE)
                   for a, b in pair_rows[:GRID_ROWS]], out["collisions"])
    for name, (ref_idx, train_idx) in leak_pairs.items():
        if len(ref_idx):
            out[f"leak_{name}"] = figures / f"leakage_{name}.png"
            pairs = [(references[name].read(int(r)), data.read(int(t))) for r, t in zip(ref_idx[: 3 * GRID_ROWS], train_idx)]
            rows = [sum(([a, b, None] for a, b in pairs[k : k + 3]), []) for k in range(0, len(pairs), 3)]
            face_rows(rows, out[f"leak_{name}"])
    return out


def _source(t: dict) -> str:
    if t["source"] == "given":
        return "given on the command line"
    if t.get("fit"):
        return f"at FAR {t.get('far')} on a fit of {t['impostor_pairs']} {t['source']}"
    return f"at FAR {t.get('far')} on the {t['source']}" if t.get("far") else str(t["source"])


def write_html(report: dict, figures: dict[str, Path], path: Path) -> Path:
    page = HtmlReport("facetrain audit")
    s, t = report["summary"], report["threshold"]
    page.text(f"{s['data']}. Model: {report['model']['checkpoint']} ({report['model']['arch']}, flip fusion "
              f"{report['model']['fusion']}).")
    page.text(f"Collision threshold (identity similarity: centroid cosine corrected for each identity's spread): "
              f"{t['value']:.4f}, {_source(t)}.")
    page.heading("Summary")
    ipi = s["images_per_identity"]
    page.table(["identities", "images", "images per identity (min / median / max)", "collision clusters",
                "identities to drop", "leaked images (references with a significant excess)"],
               [[s["identities"], s["images"], f"{ipi['min']} / {ipi['median']:g} / {ipi['max']}",
                 len(report["collisions"]["clusters"]), report["collisions"]["identities_to_drop"], s["leaked_images"]]])
    if report["leakage"]:
        page.text("Leakage: " + ("no reference shows more matches than chance gives." if not s["leaking_references"]
                                 else f"significant excess in {', '.join(s['leaking_references'])}."))
    page.heading("Intra-class consistency")
    d = report["intra_class"]["distribution"]
    page.table(["", "mean", "p05", "p50", "p95"], [["cosine to own centroid", d["mean"], d["p05"], d["p50"], d["p95"]]])
    page.image(figures["similarity"], "per identity: mean cosine of its images to its centroid, and similarity "
               "to the most similar other identity")
    page.text("Least consistent identities (possible label noise or identity drift), least typical images first:")
    page.table(["identity", "images", "consistency"],
               [[e["identity"], e["images"], e["consistency"]] for e in report["intra_class"]["least_consistent"][:GRID_ROWS]])
    page.image(figures["least_consistent"], "one row per identity, in the order of the table")
    intra = report["intra_class"]
    suspects = intra["suspected_mislabels"]
    page.heading("Suspected mislabelled images")
    page.text(f"{len(suspects)} of {intra['judged_images']} images ({100 * intra['suspected_share']:.2f} %): "
              f"{intra['mislabel_rule']}.")
    if suspects:
        page.table(["image", "identity", "own cosine", "nearest other identity", "its cosine"],
                   [[m["image"], m["identity"], m["own_cosine"], m["nearest_identity"], m["nearest_cosine"]]
                    for m in suspects[:GRID_ROWS]])
        page.image(figures["mislabels"], "each row: the image | exemplars of its identity | exemplars of the nearer one")
    page.heading("Identity collisions (probably one person)")
    pairs = report["collisions"]["pairs"]
    chance = report["collisions"].get("chance")
    page.text(f"{len(pairs)} identity pairs above the threshold, in {len(report['collisions']['clusters'])} clusters"
              + (f"; {chance['verdict']}." if chance else "."))
    if pairs:
        page.table(["a", "b", "similarity", "centroid cosine", "mean image-pair cosine"],
                   [[p["a"], p["b"], p["similarity"], p["cosine"], p["mean_cosine"]] for p in pairs[:GRID_ROWS]])
        page.image(figures.get("collisions", Path()), "closest pairs: images of a | images of b")
        page.table(["cluster", "identities", "images", "keep"],
                   [[k, ", ".join(c["identities"]), c["images"], c["keep"]] for k, c in enumerate(report["collisions"]["clusters"])][:50])
    page.heading("Leakage of reference sets")
    page.text("Each reference has its own thresholds, set on impostor pairs of identities the model has not seen, and "
              "a chance count from the same pairs; an excess is significant when a one-sided Poisson test (scanned over "
              "the pairs' scores, Bonferroni-corrected) gives p below the stated alpha.")
    if report["leakage"]:
        page.table(["reference", "images", "threshold", "threshold source", "pairs above", "expected by chance",
                    "verdict", "identity level", "leaked training images", "median nearest cosine"],
                   [[name, v["images"], v["threshold"]["value"], _source(v["threshold"]), v["pair_count"],
                     v["expected_by_chance"], v["verdict"],
                     v["identity_level"]["verdict"] if v["identity_level"] else "no identity labels",
                     v["leaked_train_images"], v["nearest_train_cosine"].get("p50")]
                    for name, v in report["leakage"].items()])
        page.image(figures.get("leakage", Path()), "cosine of each reference image to its nearest training image")
        for name, v in report["leakage"].items():
            if v["identity_pairs"]:
                page.text(f"{name}: reference identities that match a training identity, best first:")
                page.table(["reference identity", "training identity", "similarity", "centroid cosine"],
                           [[p["reference_identity"], p["train_identity"], p["similarity"], p["cosine"]]
                            for p in v["identity_pairs"][:50]])
            if v["pairs"]:
                page.text(f"{name}: closest pairs (reference | training), best first:")
                page.table(["reference", "training", "cosine"], [[p["reference"], p["train"], p["cosine"]] for p in v["pairs"][:10]])
                page.image(figures.get(f"leak_{name}", Path()), f"{name}: reference image | training image")
    else:
        page.text("No reference set given (--reference).")
    return page.write(path)
