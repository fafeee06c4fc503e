"""`facetrain recipes [NAME]`: the published training recipes `facetrain train --recipe NAME` fills in,
with their sources, reported numbers and what the sources leave out."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this recipe only")


def run(args: argparse.Namespace) -> int:
    from facetrain.training.recipes import RECIPES, describe, get_recipe

    recipes = [get_recipe(args.name)] if args.name else list(RECIPES.values())
    print("\n\n".join("\n".join(describe(recipe)) for recipe in recipes))
    return 0
