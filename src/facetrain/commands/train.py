"""`facetrain train`: the AdaFace recipe with AdaFace's flags (seed's `python main.py ...`)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.train.config import add_train_arguments

    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.train.config import config_from_args
    from facetrain.train.launch import launch_training

    config = config_from_args(args)
    try:
        launch_training(config)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (the resume is exact), the shell's exit status for SIGINT
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    return 0
