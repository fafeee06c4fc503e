"""`facetrain report RUN_DIR`: write RUN_DIR/report.html (self-contained) for a training run."""
import argparse

from facetrain.report import write_run_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="output folder of `facetrain train` (config.json, metrics.csv, ...)")
    parser.add_argument("--out", default=None, help="where to write the HTML (default RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    path = write_run_report(args.run_dir, args.out)
    print(f"report: {path}")
    return 0
