"""`facetrain demo [--out DIR]`: synthetic data -> training -> evaluation -> report, no data needed."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run of the same pipeline (for tests)")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of training epochs")
    parser.add_argument("--arch", default=None, help="override the backbone (default tinynet)")
    parser.add_argument("--seed", type=int, default=None, help="data and training seed (default 0); other seeds "
                                                                "show the run-to-run spread")
    from facetrain.precision import TRAIN_PRECISIONS

    parser.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                        help="training precision (default auto: bf16 where it is fast, e.g. CPUs with "
                             "AMX/AVX512-BF16, else fp32; fp16 needs a GPU)")
    parser.add_argument("--min_accuracy", type=float, default=None,
                        help="fail (exit 1) when the average over the five sets is lower (default 0.94; "
                             "none with --tiny; 0 accepts any)")


def run(args: argparse.Namespace) -> int:
    from facetrain.demo import DemoSettings, check_accuracy_floor, run_demo
    from facetrain.report.demo_report import accuracy_table
    from facetrain.report.html import format_cell

    settings = DemoSettings.tiny() if args.tiny else DemoSettings()
    if args.epochs is not None:
        settings.epochs = args.epochs
    if args.arch is not None:
        settings.arch = args.arch
    if args.seed is not None:
        settings.seed = args.seed
    if args.precision is not None:
        settings.precision = args.precision
    if args.min_accuracy is not None:
        settings.min_average_accuracy = args.min_accuracy
    results = run_demo(args.out, settings)
    header, rows = accuracy_table(results)
    print("\n" + "".join(f"{h:>15}" for h in header))
    for row in rows:
        print("".join(f"{format_cell(v):>15}" for v in row))
    tar = results["ijb"]["tar_at_far"] or {}
    print("\nIJB-like TAR@FAR: " + ", ".join(f"{k}: {v:.4f}" for k, v in tar.items()))
    t = results["training"]
    print(f"training: {t['seconds']:.0f} s, {t['img_per_sec'] or 0:.0f} img/s")
    print(f"\nreport: {results['report']}\nresults: {args.out}/results.json")
    check_accuracy_floor(results, settings.min_average_accuracy)  # after the table, so the numbers are seen
    return 0
