"""`facetrain <verb>`: each verb lives in `facetrain.commands.<verb>` and is imported only when used,
so `facetrain --help` stays fast and one verb's heavy imports never slow another."""
from __future__ import annotations

import argparse
import importlib
import io
import sys
import warnings

from facetrain.errors import FacetrainError, one_line
from facetrain.option_checks import check_parsed

# verb -> one-line description; the module `facetrain.commands.<verb>` provides
# `add_arguments(parser)` and `run(args) -> int`.
VERBS: dict[str, str] = {
    "demo": "generate synthetic faces, train, evaluate and write a report (no data needed)",
    "synth": "generate a synthetic face dataset (image folder, .bin sets, RecordIO, IJB-like)",
    "info": "describe any supported dataset (.bin, memfile, RecordIO, image folder)",
    "check": "check a benchmark copy or dataset: published counts, duplicates, sha256, alignment, channel order",
    "convert": "convert .bin / RecordIO to memfiles or image folders (seed's convert.py)",
    "compound": "merge several image-folder datasets into one",
    "train": "train a backbone with a margin head (seed's main.py)",
    "eval": "evaluate a checkpoint on the five high-quality verification sets",
    "calibrate": "the decision threshold at a false-accept rate, with its 95% interval (stored with --save)",
    "ijb": "evaluate a checkpoint on IJB-B / IJB-C (1:1 and 1:N)",
    "tinyface": "evaluate a checkpoint on TinyFace (rank-1/5/20 identification, low-resolution faces)",
    "align": "detect and align faces of a folder of photos to 112x112 (MTCNN)",
    "embed": "embed a folder of faces into a .npz of features",
    "compare": "similarity matrix (and heatmap PNG) of a few face images",
    "export": "export a checkpoint to ONNX and/or safetensors",
    "consolidate": "gather a Partial FC checkpoint's shards into one AdaFace-layout checkpoint",
    "report": "write an HTML report for a training run directory",
    "make-bin": "build a .bin verification set from an image folder (random or listed pairs)",
    "audit": "audit a face dataset: identity collisions, intra-class consistency, leakage of reference faces",
}


def build_parser(verb: str) -> tuple[argparse.ArgumentParser, object]:
    module = importlib.import_module(f"facetrain.commands.{verb.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"facetrain {verb}", description=VERBS[verb])
    module.add_arguments(parser)
    return parser, module


def _usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: facetrain <verb> [options]   (facetrain <verb> --help for its options)", "", "verbs:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _print_file_names_as_they_are()
    warnings.formatwarning = _one_line_warning
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from facetrain.version import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"facetrain: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        parser, module = build_parser(verb)
        args = parser.parse_args(rest)
        check_parsed(parser, args)
        return int(module.run(args) or 0)
    except (FacetrainError, OSError) as exc:  # OSError: the file system refused (permissions, disk full, ...)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        # Ctrl-C: outputs are committed atomically, so the interrupted one was removed on the way out
        # (and a re-run continues where commands resume); worker processes leave the signal to us.
        # Training says how to resume (train.loop.TrainingInterrupted)
        print(" ".join(str(exc).split()) or "interrupted", file=sys.stderr)
        return 130


def _print_file_names_as_they_are() -> None:
    """A file name that is not UTF-8 reaches the terminal as its own bytes (surrogateescape, as
    `io_utils.encode_text` writes it to files), not as a UnicodeEncodeError. Python does this by itself
    only in the C locale."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """A warning is one line for the user, like an error (not Python's file, line and source text)."""
    return f"warning: {' '.join(str(message).split())}\n"
