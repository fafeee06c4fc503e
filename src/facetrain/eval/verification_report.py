"""The verification results as a text table, a CSV and a JSON."""
from __future__ import annotations

import csv
import io
import os

from facetrain.io_utils import atomic_write_bytes, atomic_write_json, encode_text

COLUMNS = ("accuracy", "std", "best_threshold", "best_threshold_cosine", "tar_at_far_1e-3", "mean_norm", "pairs")


def format_results(results: dict[str, dict]) -> str:
    """Aligned text table: one row per set, then the average; accuracy in %."""
    lines = [f"{'set':<10} {'pairs':>6} {'acc %':>8} {'std %':>7} {'thr L2':>7} {'thr cos':>7} {'TAR@1e-3':>9} "
             f"{'norm':>8}"]
    for name, r in results.items():
        if name == "average":
            continue
        lines.append(f"{name:<10} {r['pairs']:>6d} {100 * r['accuracy']:8.2f} {100 * r['std']:7.2f} "
                     f"{r['best_threshold']:7.3f} {r['best_threshold_cosine']:7.3f} {100 * r['tar_at_far_1e-3']:9.2f} "
                     f"{r['mean_norm']:8.2f}")
    avg = results.get("average")
    if avg and avg.get("sets"):
        lines.append(f"{'average':<10} {'':>6} {100 * avg['accuracy']:8.2f} {'':>7} {avg['best_threshold']:7.3f} "
                     f"{avg['best_threshold_cosine']:7.3f} {100 * avg['tar_at_far_1e-3']:9.2f} {avg['mean_norm']:8.2f}   ({', '.join(avg['sets'])})")
    return "\n".join(lines)


def write_csv(results: dict[str, dict], path: str | os.PathLike) -> None:
    """One row per set (fractions, not %), plus the average row over the standard sets."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["set", *COLUMNS])
    for name, r in results.items():
        if name == "average":
            writer.writerow(["average", *[r.get(c, "") if c not in ("std", "pairs") else "" for c in COLUMNS]])
        else:
            writer.writerow([name, *[r[c] for c in COLUMNS]])
    atomic_write_bytes(path, encode_text(buf.getvalue()))


def write_json(results: dict[str, dict], path: str | os.PathLike, meta: dict | None = None) -> None:
    atomic_write_json(path, {"meta": meta or {}, "results": results})
