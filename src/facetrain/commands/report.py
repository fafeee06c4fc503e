"""`facetrain report RUN_DIR`: write RUN_DIR/report.html (self-contained) and, for a finished run,
RUN_DIR/MODEL_CARD.md."""
import argparse
from pathlib import Path

from facetrain.errors import ConfigError
from facetrain.report import write_run_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="output folder of `facetrain train` (config.json, metrics.csv, ...)")
    parser.add_argument("--out", default=None, help="where to write the HTML (default RUN_DIR/report.html)")
    parser.add_argument("--audit", default=None, help="`facetrain audit`'s audit.json or scorecard.json to quote in "
                                                      "RUN_DIR/MODEL_CARD.md (default: the run's --audit)")


def run(args: argparse.Namespace) -> int:
    from facetrain.training.model_card import read_audit, write_model_card
    from facetrain.training.run_folder import RESULTS

    finished = (Path(args.run_dir) / RESULTS).is_file()
    if args.audit:  # refused before anything is written
        if not finished:
            raise ConfigError(f"{args.run_dir}: no {RESULTS} (the run has not finished): no model card to quote "
                              "--audit in")
        read_audit(args.audit)
    path = write_run_report(args.run_dir, args.out)
    print(f"report: {path}")
    if finished:
        print(f"model card: {write_model_card(args.run_dir, args.audit)}")
    return 0
