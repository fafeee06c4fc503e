"""`facetrain align IN_DIR OUT_DIR`: raw photos per identity -> aligned 112x112 training folder OUT_DIR/imgs."""
from __future__ import annotations

import argparse

from facetrain.align.aligner import SELECT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_dir", help="photos as IN_DIR/<identity>/<image> (or IN_DIR/imgs/<identity>/<image>)")
    parser.add_argument("out_dir", help="output root; faces go to OUT_DIR/imgs/<identity>/<stem>.jpg")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, each with its own MTCNN")
    parser.add_argument("--select", choices=SELECT_MODES, default="score",
                        help="face kept when several are found: highest detection score or largest box")
    parser.add_argument("--device", default="cpu", help="torch device for MTCNN, e.g. cpu or cuda:0")
    parser.add_argument("--factor", type=float, default=0.709,
                        help="MTCNN pyramid step; AdaFace used 0.85 (more scales: a little more recall, slower)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from facetrain.align.batch import REPORT_NAME, align_folder

    report = align_folder(args.in_dir, args.out_dir, workers=args.workers, select=args.select,
                          device=args.device, factor=args.factor, progress=False if args.no_progress else None)
    print(report.summary())
    for path in report.no_face:
        print(f"  no face: {path}")
    for item in report.unreadable:
        print(f"  unreadable: {item['error']}")
    print(f"report: {args.out_dir}/{REPORT_NAME}")
    return 0
