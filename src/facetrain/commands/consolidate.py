"""`facetrain consolidate CKPT --out FULL.ckpt`: gather a Partial FC checkpoint's shards into one
AdaFace-layout checkpoint (`head.kernel` (E, C) + the margin's buffers + the centres' momentum)."""
from __future__ import annotations

import argparse
from pathlib import Path

from facetrain.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .ckpt written by `facetrain train --partial_fc` (its .pfc folder "
                                           "of shards next to it)")
    parser.add_argument("--out", required=True, help="the consolidated .ckpt to write")


def run(args: argparse.Namespace) -> int:
    from facetrain.heads.partial_fc_checkpoint import consolidate

    if not Path(args.checkpoint).is_file():
        raise ConfigError(f"{args.checkpoint}: checkpoint not found")
    if Path(args.out).resolve() == Path(args.checkpoint).resolve():
        raise ConfigError(f"{args.out}: would overwrite the checkpoint being consolidated")
    summary = consolidate(args.checkpoint, args.out)
    print(f"{args.out}: head.kernel {summary['embedding_size']} x {summary['classes']} from {summary['shards']} "
          f"shard(s){', with momentum' if summary['momentum'] else ''}")
    return 0
