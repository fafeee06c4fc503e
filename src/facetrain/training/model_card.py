"""`MODEL_CARD.md`: what a trained model is, from its run folder's own records.

`render_model_card(run_dir)` reads `results.json` (the final test, the run's facts, the data's
identity), `config.json` (architecture, head, hyper-parameters, seed, data paths), `metrics.csv` (the
validation curve) and the tested checkpoint (a calibrated threshold that `facetrain calibrate --save`
stored in it); `write_model_card` writes it atomically beside `results.json`. Training writes it at its
end (rank 0), `facetrain report RUN` and `facetrain calibrate --save` rewrite it, and `facetrain export`
writes a copy beside the exported files (`exported_card`).

The audit: `--audit FILE` (kept in `config.json`; `facetrain report RUN --audit FILE` for one rewrite)
names `facetrain audit`'s `audit.json` or `scorecard.json`. A scorecard row is quoted when its `path` is
the run's training data; an `audit.json` when its image and identity counts are the data's. Otherwise the
card says that the audit is of other data. Licence terms come from `data.licences` (never guessed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from facetrain.data.guards.paths import resolve_data_path
from facetrain.data.licences import UNKNOWN, dataset_terms, training_data_terms
from facetrain.errors import DataError, FacetrainError
from facetrain.io_utils import atomic_write_bytes, encode_text
from facetrain.training.logger import CSV_NAME, CURVES_NAME, read_metrics, warn
from facetrain.training.run_folder import CONFIG, MODEL_CARD, RESULTS
from facetrain.version import __version__

CURVE_ROWS = 12  # validation curve rows shown (evenly spaced, the best one always)
TEST_COLUMNS = (("accuracy", "accuracy"), ("std", "std"), ("best_threshold_cosine", "threshold (cosine)"),
                ("tar_at_far_1e-3", "TAR at FAR 1e-3"), ("pairs", "pairs"))
HYPER_PARAMETERS = ("epochs", "batch_size", "lr", "lr_milestones", "lr_gamma", "momentum", "weight_decay",
                    "warmup_epochs", "accumulate_grad_batches", "crop_augmentation_prob", "low_res_augmentation_prob",
                    "photometric_augmentation_prob", "swap_color_channel", "partial_fc", "sample_rate",
                    "start_from_model_statedict", "finetune_from", "precision", "deterministic")


def data_facts(config, source, fingerprint: str) -> dict[str, Any]:
    """The training data as `results.json` records it (`data`): what the card's data section shows."""
    path = resolve_data_path(config.data_root, config.train_data_path, "training data (--train_data_path)")
    return {"path": str(path), "description": source.describe(), "images": len(source),
            "identities": int(source.num_classes), "fingerprint": fingerprint}


def _read_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object")
    return value


def read_audit(path: str | os.PathLike) -> dict:
    """`facetrain audit`'s audit.json or scorecard.json (DataError naming the file otherwise)."""
    audit = _read_object(Path(path))
    if not isinstance(audit.get("datasets"), list) and not isinstance(audit.get("summary"), dict):
        raise DataError(f"{path}: neither an audit.json (no 'summary') nor a scorecard.json (no 'datasets')")
    return audit


def _same_path(a: str, b: str) -> bool:
    pa, pb = Path(a).resolve(), Path(b).resolve()
    return pa == pb or {pa.name, pb.name} == {"imgs"} and pa.parent == pb.parent or pa == pb.parent or pb == pa.parent


def audit_lines(path: str, data: dict) -> list[str]:
    """The card's audit section: the audit's row for this data, or why there is none."""
    try:
        audit = read_audit(path)
    except DataError as exc:
        return [f"The audit given could not be read: {exc}."]
    if isinstance(audit.get("datasets"), list):
        rows = [r for r in audit["datasets"] if isinstance(r, dict) and _same_path(str(r.get("path", "")), data["path"])]
        if not rows:
            return [f"`{path}` holds no row for {data['path']} (its rows: "
                    f"{', '.join(str(r.get('path')) for r in audit['datasets'] if isinstance(r, dict)) or 'none'})."]
        labels = audit.get("columns") if isinstance(audit.get("columns"), dict) else {}
        row = rows[0]
        lines = [f"Scorecard `{path}` (model {audit.get('model', '?')}, FAR {audit.get('far', '?')}), row "
                 f"`{row.get('dataset', '?')}`:", "", "| measure | value |", "|---|---|"]
        lines += [f"| {labels.get(k, k)} | {_cell(v)} |" for k, v in row.items() if k not in ("dataset", "path", "report")]
        return lines
    summary = audit["summary"]
    if (summary.get("images"), summary.get("identities")) != (data.get("images"), data.get("identities")):
        return [f"`{path}` audits other data ({summary.get('images')} images, {summary.get('identities')} identities; "
                f"this run's: {data.get('images')} and {data.get('identities')})."]
    intra, collisions = audit.get("intra_class", {}), audit.get("collisions", {})
    rows = [("data", summary.get("data")), ("identities", summary.get("identities")), ("images", summary.get("images")),
            ("images per identity", summary.get("images_per_identity", {}).get("median")),
            ("intra-class consistency (median)", intra.get("distribution", {}).get("p50")),
            ("colliding identity pairs", len(collisions.get("pairs", [])) if "pairs" in collisions else None),
            ("threshold", audit.get("threshold", {}).get("value"))]
    rows += [(f"leakage {name}", leak.get("verdict", f"{leak.get('pair_count')} pairs"))
             for name, leak in audit.get("leakage", {}).items() if isinstance(leak, dict)]
    return [f"Audit `{path}`:", "", "| measure | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows
                                                                         if v is not None]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(_cell, value))
    return "-" if value is None or value == "" else str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def curve_rows(run_dir: Path) -> list[tuple[int, int, float]]:
    """(step, epoch, mean validation accuracy) of the run's validations, at most CURVE_ROWS, the best kept."""
    csv = run_dir / CSV_NAME
    if not csv.is_file():
        return []
    try:
        points = [(r["step"], r["epoch"], r["value"]) for r in read_metrics(csv) if r["name"] == "val_acc"]
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{csv}: not the step,epoch,name,value table `facetrain train` writes ({exc})") from None
    if len(points) <= CURVE_ROWS:
        return points
    best = max(range(len(points)), key=lambda i: points[i][2])
    keep = {round(i * (len(points) - 1) / (CURVE_ROWS - 2)) for i in range(CURVE_ROWS - 1)} | {best}
    return [points[i] for i in sorted(keep)]


def _checkpoint_calibration(run_dir: Path, results: dict) -> tuple[str, dict | None]:
    """(the tested checkpoint's name, the calibration stored in or beside it) -- ('', None) without one."""
    from facetrain.calibration_store import stored_calibration
    from facetrain.checkpoint import load_checkpoint

    for key in ("best_checkpoint", "last_checkpoint"):
        if results.get(key):
            path = run_dir / Path(results[key]).name  # the folder may have moved since
            if path.is_file():
                try:
                    return path.name, stored_calibration(path, load_checkpoint(path).get("facetrain"))
                except FacetrainError:
                    return path.name, None
    return "", None


def _licence_rows(config: dict, data: dict) -> list[list[str]]:
    rows = []
    terms = training_data_terms(data.get("path") or config.get("train_data_path", ""))
    rows.append(["training data", terms.name if terms else data.get("path", "?"), terms.terms if terms else UNKNOWN,
                 terms.source if terms else "-"])
    for key in ("start_from_model_statedict", "finetune_from"):
        if config.get(key):
            rows.append(_weights_row(str(config[key])))
    return rows


def _weights_row(reference: str) -> list[str]:
    from facetrain.models.released import ADAFACE_RELEASES, ARCH_DEFAULTS

    name = Path(reference).name
    key = ARCH_DEFAULTS.get(reference, reference)
    release = ADAFACE_RELEASES.get(key) or next((r for r in ADAFACE_RELEASES.values() if r.filename == name), None)
    if release is None:
        data = dataset_terms(name)
        return ["pretrained weights", reference, UNKNOWN + (f"; named after {data.name}: {data.terms}" if data else ""),
                data.source if data else "-"]
    data = dataset_terms(release.training_data.replace("-", ""))
    data_terms = f"{data.terms}" if data and data.terms != UNKNOWN else UNKNOWN
    return ["pretrained weights", f"AdaFace {release.filename} (trained on {release.training_data})",
            f"weights: {UNKNOWN} (AdaFace's README states none); their training data: {data_terms}",
            "https://github.com/mk-minchul/AdaFace (README)" + (f"; {data.source}" if data else "")]


def render_model_card(run_dir: str | os.PathLike, audit: str | None = None, plot: bool = True) -> str:
    """The card's Markdown for a finished run folder (`audit` overrides the run's --audit)."""
    run_dir = Path(run_dir)
    results = _read_object(run_dir / RESULTS)
    config = _read_object(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
    data = results.get("data") if isinstance(results.get("data"), dict) else {}
    runtime = results.get("runtime") if isinstance(results.get("runtime"), dict) else {}
    tested, calibration = _checkpoint_calibration(run_dir, results)
    head = config.get("head", "?")
    head_params = ", ".join(f"{k} {config[k]}" for k in ("m", "h", "s", "t_alpha") if config.get(k) is not None)
    out = [f"# Model card: {run_dir.resolve().name}", "",
           f"Written by facetrain {__version__} from this run folder's `{RESULTS}` and `{CONFIG}` "
           f"(`facetrain report {run_dir}` writes it again).", "", "## Model", ""]
    out += _table(["fact", "value"], [
        ["architecture", config.get("arch", "?")], ["head", f"{head} ({head_params})" if head_params else head],
        ["input", "112x112 BGR faces aligned to the ArcFace 5-point template, scaled to [-1, 1]"],
        ["tested checkpoint", f"{tested or '-'} (best validation {_cell(results.get('best_val_acc'))} at epoch "
                              f"{results.get('best_epoch')}, step {results.get('best_step')})"],
        ["training", f"{results.get('global_step')} optimizer steps, {results.get('epochs_completed')} epochs, "
                     f"{results.get('skipped_steps', 0)} skipped (non-finite loss)"],
        ["seed", config.get("seed", "?")]])
    out += ["", "### Hyper-parameters", ""]
    out += _table(["option", "value"], [[k, json.dumps(config[k])] for k in HYPER_PARAMETERS
                                          if config.get(k) not in (None, "")])
    out += ["", "## Data", ""]
    out += _table(["fact", "value"], [["training data", data.get("path", config.get("train_data_path", "?"))],
                             ["images", data.get("images", "?")], ["identities", data.get("identities", "?")],
                             ["fingerprint", data.get("fingerprint", "?")],
                             ["validation sets", f"{config.get('val_data_path', '?')}: "
                                                 f"{', '.join(k for k in results.get('test', {}) if k != 'average')}"]])
    out += ["", "The fingerprint is the sha256 of the image count, the labels and 16 evenly spaced images: the same "
                "data in any format gives the same one (a resumed run refuses other data by it).", ""]
    audit = audit if audit is not None else config.get("audit") or None
    out += ["### Audit", ""] + (audit_lines(audit, data) if audit else
                                ["No audit given (`facetrain train --audit FILE` or `facetrain report RUN --audit "
                                 "FILE` quotes `facetrain audit`'s row for this data)."])
    out += ["", "## Validation curve", ""]
    points = curve_rows(run_dir)
    out += _table(["step", "epoch", "mean validation accuracy"], [list(p) for p in points]) if points else \
        ["No validation ran."]
    if plot and (run_dir / CURVES_NAME).is_file():
        out += ["", f"![training curves]({CURVES_NAME})"]
    test = results.get("test") or {}
    out += ["", f"## Final test (fp32, {tested or 'no checkpoint'})", ""]
    names = [n for n in test if n != "average"] + (["average"] if "average" in test else [])
    columns = [(k, label) for k, label in TEST_COLUMNS if any(k in test[n] for n in names)]
    out += _table(["set"] + [label for _, label in columns], [[n] + [test[n].get(k) for k, _ in columns]
                                                                for n in names]) if names else ["No test ran."]
    out += ["", "## Decision threshold", ""]
    if calibration:
        from facetrain.calibration_store import describe

        out += [f"Calibrated: cosine {calibration['threshold']:.6f}, {describe(calibration)}."]
    else:
        out += ["Not calibrated: the thresholds above maximise 10-fold accuracy on the validation pairs. "
                f"`facetrain calibrate --ckpt {run_dir / (tested or 'best.ckpt')} --pairs SET --far 1e-4 --save` "
                "stores a threshold at a false-accept rate (with its interval) and rewrites this card."]
    out += ["", "## Environment", ""]
    out += _table(["fact", "value"], [["facetrain", __version__], ["torch", runtime.get("torch", "?")],
                             ["device", f"{runtime.get('device', '?')} x {runtime.get('world_size', '?')} process(es)"],
                             ["precision used", f"{runtime.get('precision', '?')}"
                                                f"{', channels_last' if runtime.get('channels_last') else ''}"],
                             ["loader workers per process", runtime.get("num_workers", "?")]])
    out += ["", "## Reproduce", "", "```sh", f"facetrain train --config {run_dir / CONFIG} --output_dir NEW_FOLDER",
            "```", "", "Same data (same fingerprint), seed and settings; the same bits on the same kind of machine and "
            "software build with `--deterministic`.", "", "## Licences", ""]
    out += _table(["what", "name", "terms", "source"], _licence_rows(config, data))
    out += ["", "Terms are quoted from their sources; \"unknown\" means none is recorded here: check with the "
                "publisher before using this model.", ""]
    return "\n".join(out)


def write_model_card(run_dir: str | os.PathLike, audit: str | None = None) -> Path:
    """Render and write RUN/MODEL_CARD.md atomically (a reader sees the old card or the new one, never half)."""
    path = Path(run_dir) / MODEL_CARD
    atomic_write_bytes(path, encode_text(render_model_card(run_dir, audit)))
    return path


def write_card_after_training(run_dir: Path) -> None:
    """Training's last act (rank 0): the card, or a warning saying why not (the run itself has finished)."""
    try:
        write_model_card(run_dir)
    except (OSError, FacetrainError) as exc:
        warn(f"{Path(run_dir) / MODEL_CARD}: not written ({getattr(exc, 'strerror', None) or exc}); "
             f"`facetrain report {run_dir}` writes it")


def refresh_card(checkpoint: str | os.PathLike) -> Path | None:
    """After a calibration stored in a checkpoint of a finished run: its card again (None elsewhere)."""
    run_dir = Path(checkpoint).resolve().parent
    return write_model_card(run_dir) if (run_dir / RESULTS).is_file() else None


def exported_card(checkpoint: str | os.PathLike, exported: list[str]) -> list[Path]:
    """Beside each exported file `F.onnx` / `F.safetensors`: `F.MODEL_CARD.md`, the card of the checkpoint's
    run folder with the exported files and their sha256 added. [] when the checkpoint is not in a run folder."""
    from facetrain.fingerprint import file_sha256

    run_dir = Path(checkpoint).resolve().parent
    if (run_dir / RESULTS).is_file():
        card = render_model_card(run_dir, plot=False)
    elif (run_dir / MODEL_CARD).is_file():
        card = (run_dir / MODEL_CARD).read_text(errors="surrogateescape")
    else:
        return []
    card += "\n## Exported files\n\n" + "\n".join(
        _table(["file", "sha256"], [[Path(f).name, file_sha256(f)] for f in exported])) + \
        f"\n\nExported from `{checkpoint}` (sha256 {file_sha256(checkpoint)}).\n"
    written = []
    for path in dict.fromkeys(Path(f).with_suffix(".MODEL_CARD.md") for f in exported):
        atomic_write_bytes(path, encode_text(card))
        written.append(path)
    return written
