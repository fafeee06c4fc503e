"""`facetrain align IN_DIR OUT_DIR`: raw photos per identity -> aligned 112x112 training folder OUT_DIR/imgs."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_detector, add_device, add_max_pixels, add_quiet, add_workers

from facetrain.alignment.aligner import SELECT_MODES
from facetrain.alignment.landmarks import LAYOUTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_dir", help="photos as IN_DIR/<identity>/<image> (or IN_DIR/imgs/<identity>/<image>)")
    parser.add_argument("out_dir", help="output root; faces go to OUT_DIR/imgs/<identity>/<stem>.jpg")
    add_workers(parser, 1, "parallel processes, each with its own MTCNN")
    parser.add_argument("--select", choices=SELECT_MODES, default="score",
                        help="face kept when several are found: highest detection score or largest box")
    add_device(parser)
    add_detector(parser)
    parser.add_argument("--factor", type=float, default=None,
                        help="MTCNN pyramid step (default: the detector's own, 0.85 adaface, 0.709 facenet)")
    parser.add_argument("--landmarks", default=None, metavar="FILE",
                        help="CSV or JSON of 5 landmarks per image (eye, eye, nose, mouth corners, image-left first): "
                             "warp them instead of detecting; images not listed are skipped (see the report)")
    parser.add_argument("--landmark_layout", choices=LAYOUTS, default="xy",
                        help="10 flat numbers per image as x1,y1,...,x5,y5 (xy: insightface, RetinaFace, IJB) "
                             "or x1..x5,y1..y5 (xxyy: MTCNN's flattening)")
    add_max_pixels(parser, "photos (listed in the report)")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.devices import resolve_device

    from facetrain.alignment.batch import REPORT_NAME, align_folder
    from facetrain.alignment.landmarks import read_landmarks

    landmarks = None if args.landmarks is None else read_landmarks(args.landmarks, args.landmark_layout)
    report = align_folder(args.in_dir, args.out_dir, workers=args.workers, select=args.select,
                          device=str(resolve_device(args.device)), factor=args.factor, detector=args.detector,
                          progress=False if args.quiet else None, max_pixels=args.max_pixels, landmarks=landmarks)
    print(report.summary())
    for path in report.no_face:
        print(f"  no face: {path}")
    for path in report.no_landmarks:
        print(f"  no landmarks (skipped): {path}")
    for item in report.unreadable:
        print(f"  unreadable: {item['error']}")
    print(f"report: {args.out_dir}/{REPORT_NAME}")
    return 0
