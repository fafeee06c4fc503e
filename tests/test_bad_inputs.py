"""Every hostile or careless input: exit code 1, one `error:` line naming the problem, no
traceback, and no change to anything already on disk."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from data_format_fixtures import faces, make_image_folder
from facetrain.cli import main
from facetrain.data.bin import write_bin
from facetrain.data.recordio import RecordWriter, write_insightface_rec


def _jpg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img)[1].tobytes()


def _rec(root: Path, labels: list, header: list | None = None) -> None:
    images, _ = faces(len(labels))
    with RecordWriter(root / "train.rec", root / "train.idx") as w:
        first = 0
        if header is not None:
            w.write(0, header, b"")
            first = 1
        for k, label in enumerate(labels):
            w.write(first + k, label, _jpg(images[k]))


def _valid_rec(root: Path) -> None:
    images, labels = faces(6, identities=3)
    write_insightface_rec(root, [_jpg(i) for i in images], labels, header=False)


def _edit_idx(root: Path, edit: Callable[[list[str]], list[str]]) -> None:
    lines = (root / "train.idx").read_text().splitlines()
    (root / "train.idx").write_text("\n".join(edit(lines)) + "\n")


def _bin(root: Path, name: str = "lfw.bin") -> None:
    write_bin(root / name, faces(4)[0], [True, False])


def _raw_bin(root: Path, name: str, data: bytes) -> None:
    (root / name).write_bytes(data)


def _huge_png_bin(root: Path) -> None:
    huge = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))[1].tobytes()
    _raw_bin(root, "lfw.bin", pickle.dumps(([_jpg(faces(1)[0][0]), huge], [True]), protocol=4))


def _dcface(root: Path, bad_name: str) -> None:
    record = root / "record"
    record.mkdir()
    images, labels = faces(2, identities=2)
    write_insightface_rec(record / "train.rec", [_jpg(i) for i in images], labels, header=False)
    (record / "list.txt").write_text(f"a/0.jpg\n{bad_name}\n")


def _photos(root: Path) -> None:
    for identity in ("alice", "bob"):
        (root / identity).mkdir(parents=True)
        cv2.imwrite(str(root / identity / "0.jpg"), faces(1)[0][0])


# name -> (setup(D), argv with {D} for the data folder, a fragment the error line must contain)
CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "rec_nan_label": (lambda d: _rec(d, [0.0, float("nan")]), ["convert", "-r", "{D}", "--make_image_files"],
                      "record 1 has label nan"),
    "rec_inf_label": (lambda d: _rec(d, [0.0, float("inf")]), ["convert", "-r", "{D}", "--make_image_files"],
                      "record 1 has label inf"),
    "rec_fractional_label": (lambda d: _rec(d, [0.0, 1.5]), ["convert", "-r", "{D}", "--make_image_files"],
                             "record 1 has label 1.5"),
    "rec_header_nan": (lambda d: _rec(d, [0.0, 1.0], header=[float("nan"), 3.0]),
                       ["convert", "-r", "{D}", "--make_image_files"], "header record 0 has labels"),
    "rec_header_trillion_classes": (lambda d: _rec(d, [0.0, 1.0], header=[3.0, 1e12]), ["info", "{D}"],
                                    "declares"),
    "idx_not_numeric": (lambda d: (_valid_rec(d), _edit_idx(d, lambda ls: ls[:2] + ["2\tabc"] + ls[3:])),
                        ["info", "{D}/train.rec"], "line 3 is '2\\tabc'"),
    "idx_duplicate_key": (lambda d: (_valid_rec(d), _edit_idx(d, lambda ls: ls + [ls[0]])),
                          ["convert", "-r", "{D}", "--make_image_files"], "key 0 is listed more than once"),
    "idx_of_other_rec": (lambda d: (_valid_rec(d), _edit_idx(d, lambda ls: ls[:-1])),
                         ["convert", "-r", "{D}", "--make_image_files"], "does not match train.rec"),
    "rec_empty": (lambda d: (d / "train.rec").touch(), ["convert", "-r", "{D}", "--make_image_files"],
                  "no image records"),
    "bin_huge_bytes": (lambda d: _raw_bin(d, "lfw.bin", b"\x80\x04\x8e" + struct.pack("<Q", 10 ** 12) + b"abc"),
                       ["convert", "-r", "{D}", "--make_validation_memfiles"], "declares an object larger"),
    "bin_code_injection": (lambda d: _raw_bin(d, "lfw.bin", b"cos\nsystem\n(S'echo hacked'\ntR."),
                           ["convert", "-r", "{D}", "--make_validation_memfiles"], "tries to run code"),
    "bin_dotdot_name": (lambda d: _bin(d, "..bin"), ["convert", "-r", "{D}", "--make_validation_memfiles"],
                        "cannot name a verification set"),
    "bin_names_clash": (lambda d: (_bin(d, "lfw.bin"), _bin(d, "LFW.bin")),
                        ["convert", "-r", "{D}", "--make_validation_memfiles"], "both map to verification set"),
    "bin_over_pixel_limit": (_huge_png_bin, ["convert", "-r", "{D}", "--make_validation_memfiles"],
                             "20000x20000 pixels is over the limit"),
    "out_is_a_file": (lambda d: (_bin(d), (d / "out").write_text("x")),
                      ["convert", "-r", "{D}", "--make_validation_memfiles", "--out", "{D}/out"], "not a folder"),
    "dcface_hidden_entry": (lambda d: _dcface(d, ".hidden/1.jpg"), ["convert", "-r", "{D}", "--make_image_files"],
                            "list.txt line 2"),
    "dcface_nested_entry": (lambda d: _dcface(d, "a/b/1.jpg"), ["convert", "-r", "{D}", "--make_image_files"],
                            "list.txt line 2"),
    "compound_into_its_input": (lambda d: make_image_folder(d / "a", {"x": 2, "y": 2}),
                                ["compound", "--list_datasets", "{D}/a", "--final_path", "{D}/a/imgs/merged/imgs"],
                                "inside input"),
    "align_into_its_input": (_photos, ["align", "{D}", "{D}", "--no_progress"], "inside the input"),
    # torch's own refusal spans lines and advises weights_only=False: one line, without that advice
    "ckpt_corrupt": (lambda d: (d / "bad.ckpt").write_bytes(bytes(range(250, 256)) * 20),
                     ["eval", "--ckpt", "{D}/bad.ckpt", "--val_data_path", "{D}"],
                     "bad.ckpt: cannot be loaded safely ("),
    "train_label_of_a_billion": (lambda d: _rec(d, [0.0, 1e9]),
                                 ["train", "--data_root", "{D}", "--train_data_path", ".", "--use_mxrecord",
                                  "--arch", "tinynet", "--gpus", "0", "--output_dir", "{D}/run", "--no_progress"],
                                 "1000000001 classes for 2 images"),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def _argv(template: list[str], root: Path) -> list[str]:
    return [a.replace("{D}", str(root)) for a in template]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(tmp_path, capsys, case):
    setup, template, fragment = CASES[case]
    setup(tmp_path)
    (tmp_path / "earlier_output.txt").write_text("kept")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(_argv(template, tmp_path)) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert "weights_only" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["rec_nan_label", "bin_huge_bytes", "align_into_its_input"])
def test_as_a_real_process_no_traceback_reaches_the_user(tmp_path, case):
    setup, template, fragment = CASES[case]
    setup(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "facetrain", *_argv(template, tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_error_line(tmp_path, capsys):
    _bin(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["convert", "-r", str(tmp_path), "--make_validation_memfiles", "--out", str(out)]) == 1
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Permission denied" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_huge_photo_given_to_compare_is_one_line(tmp_path, capsys):
    """compare/embed --align read photos through the same pixel limit as align (no DecompressionBombError)."""
    from PIL import Image

    from facetrain.cli import main

    from facetrain.checkpoint import save_checkpoint
    from facetrain.models import build_model

    save_checkpoint(tmp_path / "tiny.ckpt", build_model("tinynet"))
    Image.new("RGB", (1200, 1000)).save(tmp_path / "huge.png")
    for verb in (["compare", str(tmp_path / "huge.png")], ["embed", str(tmp_path), "--align", "--out", str(tmp_path / "e.npz")]):
        code = main([*verb, "--ckpt", str(tmp_path / "tiny.ckpt"), "--max_pixels", "1000000", "--device", "cpu"])
        out, err = capsys.readouterr()
        if verb[0] == "compare":
            assert code == 1 and err.startswith("error:") and err.count("\n") == 1 and "1000000" in err, err
        else:  # a batch command lists the photo as failed and goes on
            assert code == 0 and "failed: 1" in out and "huge.png: image of 1200x1000 pixels is over the limit" in out
