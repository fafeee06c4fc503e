"""The demo's report.html: results against the raw-pixel baseline, IJB, curves, faces, dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from facetrain.report.html import HtmlReport
from facetrain.report.run_report import add_run_sections, verification_rows


def accuracy_table(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per set: the trained model's accuracy next to raw-pixel cosine on the same pairs."""
    baseline = results["raw_pixel_baseline"]
    names = [n for n in results["accuracy"] if n != "average"] + ["average"]
    rows = [[n, results["accuracy"].get(n), baseline.get(n)] for n in names if n in results["accuracy"]]
    return ["set", "trained model", "raw pixels"], rows


def add_audit_section(report: HtmlReport, out_dir: Path, audit: dict[str, Any] | None) -> None:
    """The training set's audit (`facetrain audit`): threshold, collisions, consistency, leakage per benchmark."""
    if not audit:
        return
    t = audit["threshold"]
    report.heading("Dataset audit: training set against the benchmark sets")
    report.text(f"facetrain audit with the trained model; collision threshold cosine {t['value']:.4f} at FAR "
                f"{t['far']:g} on the training set's {t['source']}. {audit['collision_pairs']} identity pairs above it "
                f"({audit['collision_clusters']} clusters); intra-class consistency median "
                f"{audit['intra_class']['p50']:.3f}. Full report: audit/audit.html.")
    leaking = [name for name, v in audit["leakage"].items() if v["leak"]]
    report.text("The benchmark sets hold other identities than the training set, so every pair found should be a "
                "chance match. Each benchmark's threshold and chance count come from its own non-matching pairs "
                "(identities the model has not seen); the verdict is a one-sided Poisson test of the pairs found. "
                + (f"Leakage: {', '.join(leaking)}." if leaking else "No leakage: every benchmark is consistent with chance."))
    report.table(["benchmark", "images", "threshold", "pairs above threshold", "expected by chance", "verdict",
                  "median nearest cosine", "max nearest cosine"],
                 [[name, v["images"], v["threshold"], v["pair_count"], v["expected_by_chance"], v["verdict"],
                   v["nearest_train_cosine"]["p50"], v["nearest_train_cosine"]["max"]] for name, v in audit["leakage"].items()])
    report.image(out_dir / "audit" / "figures" / "identity_similarity.png",
                 "mean cosine within identities and to the nearest other identity, with the threshold")
    report.image(out_dir / "audit" / "figures" / "leakage_similarity.png",
                 "each benchmark image's cosine to its nearest training image")


def add_fairness_section(report: HtmlReport, out_dir: Path, fairness: dict[str, Any]) -> None:
    """Per-group accuracy and FMR/FNMR at one threshold, the summary figures papers print, the plot."""
    report.heading("Demographic fairness (four synthetic groups, harder by construction from a to d)")
    rows = [[name, g["accuracy"], g["std"], g["tar_at_far_0.001"], g["fmr"], g["fnmr"]]
            for name, g in fairness["groups"].items()]
    report.table(["group", "accuracy", "std", "TAR@FAR 1e-3", "FMR", "FNMR"], rows)
    summary, threshold = fairness["summary"], fairness["global_threshold"]

    def shown(value: float | None) -> str:
        return "n/a (a group at 0)" if value is None else f"{value:.2f}"

    report.text(f"Mean accuracy {summary['mean_accuracy']:.4f}, STD {summary['std']:.4f}, SER {shown(summary['ser'])}. "
                f"At one threshold ({threshold['threshold_cosine']:.3f}, pooled FMR {threshold['fmr_target']:g}): "
                f"FMR max/min {shown(threshold['fmr_ratio'])}, FNMR max/min {shown(threshold['fnmr_ratio'])}.")
    report.image(out_dir / "fairness.png", "ROC per group, and FMR/FNMR per group at the one threshold")


def write_demo_report(out_dir: Path, results: dict[str, Any]) -> Path:
    report = HtmlReport("facetrain demo: AdaFace on synthetic faces")
    s, train = results["settings"], results["training"]
    report.text(f"{s['arch']} trained with AdaFace for {train['epochs']} epochs on {results['dataset']['train_identities']} "
                f"synthetic identities ({results['dataset']['train_images']} images) in {train['seconds']:.0f} s "
                f"({train['img_per_sec'] or 0:.0f} img/s). Verification sets hold other identities.")
    report.heading("Verification accuracy (10-fold, fp32, best checkpoint)")
    report.table(*accuracy_table(results))
    report.table(*verification_rows(results["verification"]))
    ijb = results["ijb"]
    if ijb.get("tar_at_far"):
        report.heading(f"IJB-like protocol, 1:1 verification ({ijb['mode']})")
        report.table(["FAR"] + list(ijb["tar_at_far"]), [["TAR"] + list(ijb["tar_at_far"].values())])
        report.image(out_dir / "ijb" / "roc.png", "ROC of template pairs (log FAR)")
        if ijb.get("identification"):
            report.table(["1:N metric", "value"], [[k, v] for k, v in ijb["identification"].items()])
    fairness = results.get("fairness")
    if fairness:
        add_fairness_section(report, out_dir, fairness)
    report.heading("Similarity of a few held-out faces")
    report.image(out_dir / "compare.png", "cosine similarity; a/b are two images of the same person")
    add_audit_section(report, out_dir, results.get("audit"))
    add_run_sections(report, out_dir / "run")
    report.heading("Dataset")
    rows = [["train", results["dataset"]["train_identities"], results["dataset"]["train_images"], ""]]
    rows += [[name, v["identities"], 2 * v["pairs"], v["pairs"]] for name, v in results["dataset"]["verification_sets"].items()]
    report.table(["split", "identities", "images", "pairs"], rows)
    report.image(out_dir / "samples.png", "first image of some training identities")
    report.heading("Time")
    report.table(["step", "seconds"], [[k.removesuffix("_s"), v] for k, v in results["timings"].items()])
    return report.write(out_dir / "report.html")
