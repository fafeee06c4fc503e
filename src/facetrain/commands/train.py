"""`facetrain train`: the AdaFace recipe with AdaFace's flags (seed's `python main.py ...`)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.training.config import add_train_arguments

    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.training.config import config_from_args
    from facetrain.training.launch import launch_training

    launch_training(config_from_args(args))
    return 0
