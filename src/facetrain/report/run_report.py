"""`facetrain report RUN_DIR`: the report of one training run (config, curves, final test table)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from facetrain.errors import DataError
from facetrain.report.html import HtmlReport

REPORT_NAME = "report.html"
# Columns of the verification table, in this order when present.
METRIC_COLUMNS = ("accuracy", "std", "best_threshold", "best_threshold_cosine", "tar_at_far_1e-3", "mean_norm", "pairs")
CONFIG_KEYS = ("arch", "head", "m", "h", "s", "epochs", "batch_size", "lr", "lr_milestones", "weight_decay",
               "precision", "data_root", "train_data_path", "val_data_path", "custom_num_class")


def _read_object(path: Path) -> dict[str, Any]:
    """The JSON object (the only kind a run folder holds) of `path`; DataError naming the file otherwise."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(value, dict):
        raise DataError(f"{path}: holds a JSON {_json_kind(value)}, not the object `facetrain train` writes")
    return value


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def verification_rows(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per-set metrics (the evaluator's dict, 'average' last) -> a header and table rows."""
    columns = [c for c in METRIC_COLUMNS if any(c in m for m in results.values())]
    names = [n for n in results if n != "average"] + (["average"] if "average" in results else [])
    rows = [[name] + [results[name].get(c) for c in columns] for name in names]
    return ["set"] + columns, rows


def add_run_sections(report: HtmlReport, run_dir: Path) -> None:
    """Config, training curves and the final test of a run folder written by `facetrain train`."""
    config_path, results_path = run_dir / "config.json", run_dir / "results.json"
    if config_path.is_file():
        config = _read_object(config_path)
        report.heading("Training configuration")
        report.table(["option", "value"], [[k, json.dumps(config[k])] for k in CONFIG_KEYS if k in config])
    curves = run_dir / "curves.png"
    if not curves.is_file() and (run_dir / "metrics.csv").is_file():
        from facetrain.training.logger import plot_curves  # matplotlib only when a plot is missing

        try:
            plot_curves(run_dir / "metrics.csv", curves)
        except (KeyError, ValueError, TypeError) as exc:  # columns or values that are not the logger's
            raise DataError(f"{run_dir / 'metrics.csv'}: not the step,epoch,name,value table `facetrain train` "
                            f"writes ({type(exc).__name__}: {exc})") from None
    if curves.is_file():
        report.heading("Training curves")
        report.image(curves, "loss, learning rate and validation accuracy per step/epoch")
    if results_path.is_file():
        results = _read_object(results_path)
        test = results.get("test")
        if test is not None and not (isinstance(test, dict) and all(isinstance(m, dict) for m in test.values())):
            raise DataError(f"{results_path}: 'test' is not a table of verification sets ({{set: {{metric: value}}}})")
        if test:
            report.heading("Verification (final test, fp32, best checkpoint)")
            report.table(*verification_rows(test))
        facts = {k: results.get(k) for k in ("best_epoch", "best_val_acc", "global_step", "skipped_steps")}
        report.table(["fact", "value"], [[k, v] for k, v in facts.items() if v is not None])


def write_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() and not (run_dir / "metrics.csv").is_file():
        raise DataError(f"{run_dir}: not a training run folder (no config.json or metrics.csv)")
    report = HtmlReport(f"facetrain run: {run_dir.resolve().name}")
    add_run_sections(report, run_dir)
    return report.write(out or run_dir / REPORT_NAME)
