"""`facetrain <verb>`: each verb lives in `facetrain.commands.<verb>` and is imported only when used,
so `facetrain --help` stays fast and one verb's heavy imports never slow another."""
from __future__ import annotations

import argparse
import importlib
import sys

from facetrain.errors import FacetrainError

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
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from facetrain import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"facetrain: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    parser, module = build_parser(verb)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except FacetrainError as exc:
        # one line whatever the message quotes (torch's own errors span several)
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system refused (permissions, a file where a folder is needed, disk full)
        print(f"error: {_describe_os_error(exc)}", file=sys.stderr)
        return 1


def _describe_os_error(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what
