"""`facetrain make-bin`: an InsightFace-format .bin verification set from an image folder of aligned faces."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="aligned 112x112 faces as FOLDER/<identity>/<image> (or FOLDER/imgs/...)")
    parser.add_argument("--out", required=True, help="output .bin")
    parser.add_argument("--pairs", type=int, default=3000, help="pairs to draw, half genuine (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pairs")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="IDS",
                        help="identity folder names, or text files listing one a line, never to use "
                             "(e.g. the training identities)")
    parser.add_argument("--pairs_file", help="use these pairs instead: `path_a path_b 1|0` a line, relative to FOLDER")


def _excluded(items: list[str]) -> set[str]:
    from pathlib import Path

    names: set[str] = set()
    for item in items:
        path = Path(item)
        names |= set(path.read_text().split()) if path.is_file() else {item}
    return names


def run(args: argparse.Namespace) -> int:
    from facetrain.data.make_bin import make_bin
    from facetrain.errors import ConfigError

    if args.pairs < 2:
        raise ConfigError(f"--pairs must be >= 2, got {args.pairs}")
    summary = make_bin(args.folder, args.out, args.pairs, args.seed, frozenset(_excluded(args.exclude)),
                       args.pairs_file)
    print(f"wrote {args.out}: {summary['pairs']} pairs ({summary['genuine']} genuine) of {summary['images']} images, "
          f"{summary['identities']} identities")
    return 0
