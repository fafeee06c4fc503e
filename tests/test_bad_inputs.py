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

import facetrain
from data_format_fixtures import faces, make_image_folder
from facetrain.cli import main
from facetrain.data.formats.bin import write_bin
from facetrain.data.formats.recordio import RecordWriter, write_insightface_rec


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
    _raw_bin(root, "lfw.bin", pickle.dumps(([_jpg(faces(1)[0][0]), huge] * 2, [True, False]), protocol=4))


def _repeated_image_bin(root: Path) -> None:
    """500 KB that name one JPEG 200,000 times by pickle reference (memo get): 7 GiB once decoded."""
    _raw_bin(root, "lfw.bin", pickle.dumps(([_jpg(faces(1)[0][0])] * 200_000, [True] * 100_000), protocol=4))


def _zero_itemsize_issame_bin(root: Path) -> None:
    """issame: a zero-itemsize array of 10^12 elements (no bytes in the file, 931 GiB as booleans)."""
    _raw_bin(root, "lfw.bin", pickle.dumps(([_jpg(faces(1)[0][0])] * 2, np.empty(10**12, dtype="V0")), protocol=4))


def _tiny_model(root: Path) -> None:
    from facetrain.checkpoint import save_checkpoint
    from facetrain.models import build_model

    save_checkpoint(root / "tiny.ckpt", build_model("tinynet"))
    _bin(root)


def _train_data(root: Path) -> None:
    from train_fixtures import make_dataset

    make_dataset(root, classes=2, per_class=2, val_pairs=2)


_TRAIN = ["train", "--data_root", "{D}", "--train_data_path", "train/imgs", "--val_data_path", "val", "--arch",
          "tinynet", "--gpus", "0", "--num_workers", "0", "--output_dir", "{D}/run", "--no_progress"]
_CKPT = ["--ckpt", "{D}/tiny.ckpt"]


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


def _ckpt(root: Path, nan: bool = False) -> None:
    import torch

    from facetrain.checkpoint import save_checkpoint
    from facetrain.models import build_model

    model = build_model("tinynet").eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    save_checkpoint(root / ("nan.ckpt" if nan else "tiny.ckpt"), model)


def _labels_bin(root: Path, issame, images: int = 20) -> None:
    _ckpt(root)
    _raw_bin(root, "lfw.bin", pickle.dumps(([_jpg(f) for f in faces(images)[0]], issame), protocol=4))


def _labels_memfile(root: Path, labels: np.ndarray) -> None:
    from facetrain.data.formats.memfile import write_validation_set
    from facetrain.data.formats.verification_set import VerificationSet

    _ckpt(root)
    write_validation_set(root, VerificationSet("lfw", faces(20)[0], [True, False] * 5))
    np.save(root / "lfw_list.npy", labels)


def _eval(*extra: str) -> list[str]:
    return ["eval", "--ckpt", "{D}/tiny.ckpt", "--val_data_path", "{D}", "--device", "cpu", "--no_progress", *extra]


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
    "compound_same_dataset_twice": (lambda d: make_image_folder(d / "a", {"x": 2, "y": 2}),
                                    ["compound", "--list_datasets", "{D}/a", "{D}/a", "--final_path", "{D}/out"],
                                    "are the same dataset"),
    "compound_same_dataset_by_two_names": (lambda d: make_image_folder(d / "a", {"x": 2, "y": 2}),
                                           ["compound", "--list_datasets", "{D}/a/imgs", "{D}/a/../a", "--final_path",
                                            "{D}/out"], "are the same dataset"),
    "align_into_its_input": (_photos, ["align", "{D}", "{D}", "--no_progress"], "inside the input"),
    # torch's own refusal spans lines and advises weights_only=False: one line, without that advice
    "ckpt_corrupt": (lambda d: (d / "bad.ckpt").write_bytes(bytes(range(250, 256)) * 20),
                     ["eval", "--ckpt", "{D}/bad.ckpt", "--val_data_path", "{D}"],
                     "bad.ckpt: cannot be loaded safely ("),
    # verification labels: info and eval refuse the same sets, before any number is computed
    "issame_0d_info": (lambda d: _labels_bin(d, np.array(True)), ["info", "{D}/lfw.bin"],
                       "issame must be a list of one label per pair, got an array of shape ()"),
    "issame_2d_info": (lambda d: _labels_bin(d, np.zeros((40, 2), bool)), ["info", "{D}/lfw.bin"], "shape (40, 2)"),
    "issame_2d_eval": (lambda d: _labels_bin(d, np.zeros((40, 2), bool)), _eval(), "shape (40, 2)"),
    "issame_all_genuine": (lambda d: _labels_bin(d, [True] * 10), _eval(), "10 pairs, 10 genuine and 0 impostor"),
    "issame_all_impostor": (lambda d: _labels_bin(d, [0] * 10), _eval(), "10 pairs, 0 genuine and 10 impostor"),
    "issame_label_2": (lambda d: _labels_bin(d, [1, 0] * 4 + [2, 0]), ["info", "{D}"], "issame label 8 is 2"),
    "issame_7_pairs": (lambda d: _labels_bin(d, [True, False] * 3 + [True], 14), _eval(),
                       "lfw: 7 pairs; the 10-fold protocol needs at least 10"),
    "memfile_issame_halves_info": (lambda d: _labels_memfile(d, np.full(10, 0.5)), ["info", "{D}/lfw.dat"],
                                   "lfw_list.npy: issame label 0 is 0.5"),
    "memfile_issame_halves_eval": (lambda d: _labels_memfile(d, np.full(10, 0.5)), _eval(),
                                   "lfw_list.npy: issame label 0 is 0.5"),
    # a NaN model: no features written with "failed: 0"
    "embed_nan_model": (lambda d: (_ckpt(d, nan=True), make_image_folder(d / "faces", {"a": 2, "b": 1})),
                        ["embed", "{D}/faces", "--ckpt", "{D}/nan.ckpt", "--out", "{D}/e.npz", "--device", "cpu",
                         "--no_progress"], "nan.ckpt: the model gives non-finite (NaN/inf) embeddings for 3 of 3"),
    "hub_reference_with_newline": (lambda d: None, ["embed", "{D}", "--ckpt", "hf://owner/faces/ir50\n.ckpt", "--out",
                                                    "{D}/e.npz"], "not a file inside a Hub repository"),
    "hub_reference_traversal": (lambda d: None, ["export", "--ckpt", "hf://a/b/../../x", "--onnx", "{D}/m.onnx"],
                                "'hf://a/b/../../x': not a file inside a Hub repository"),
    # an identity folder per image plus an empty one: more classes than images, and the empty folder is why
    "train_empty_identity_folder": (lambda d: (make_image_folder(d, {"a": 1, "b": 1}), (d / "imgs" / "zz").mkdir()),
                                    ["train", "--data_root", "{D}", "--train_data_path", "imgs", "--arch", "tinynet",
                                     "--gpus", "0", "--output_dir", "{D}/run", "--no_progress"],
                                    "2 images, 3 classes (1 without images); more classes than images because "
                                    "identity folders without images keep a class index: zz:"),
    "train_label_of_a_billion": (lambda d: _rec(d, [0.0, 1e9]),
                                 ["train", "--data_root", "{D}", "--train_data_path", ".", "--use_mxrecord",
                                  "--arch", "tinynet", "--gpus", "0", "--output_dir", "{D}/run", "--no_progress"],
                                 "1000000001 classes for 2 images"),
    "bin_repeated_by_reference": (_repeated_image_bin, ["info", "{D}/lfw.bin"],
                                  "200000 images add up to 656400000 encoded bytes, more than 2 times the file"),
    "bin_zero_itemsize_issame": (_zero_itemsize_issame_bin, ["info", "{D}/lfw.bin"],
                                 "issame holds |V0 values, expected booleans"),
    # every verb's flags go through one range check (facetrain.option_checks), before anything runs
    "embed_batch_size_0": (_tiny_model, ["embed", "{D}", *_CKPT, "--out", "{D}/e.npz", "--batch_size", "0"],
                           "--batch_size must be >= 1"),
    "eval_batch_size_0": (_tiny_model, ["eval", *_CKPT, "--val_data_path", "{D}", "--batch_size", "0"],
                          "--batch_size must be >= 1"),
    "audit_batch_size_negative": (_tiny_model, ["audit", "{D}", *_CKPT, "--out", "{D}/a", "--batch_size=-5"],
                                  "--batch_size must be >= 1"),
    "audit_top_negative": (_tiny_model, ["audit", "{D}", *_CKPT, "--out", "{D}/a", "--top=-3"], "--top must be >= 0"),
    "ijb_workers_0": (_tiny_model, ["ijb", "--data_root", "{D}", *_CKPT, "--output_dir", "{D}/i", "--workers", "0"],
                      "--workers must be >= 1"),
    "export_opset_1": (_tiny_model, ["export", *_CKPT, "--onnx", "{D}/m.onnx", "--opset", "1"],
                       "--opset must be in [7, 20]"),
    "export_opset_999": (_tiny_model, ["export", *_CKPT, "--onnx", "{D}/m.onnx", "--opset", "999"],
                         "--opset must be in [7, 20]"),
    "eval_device_tpu": (_tiny_model, ["eval", *_CKPT, "--val_data_path", "{D}", "--device", "tpu"],
                        "--device 'tpu': not a device name"),
    "embed_device_meta": (_tiny_model, ["embed", "{D}", *_CKPT, "--out", "{D}/e.npz", "--device", "meta"],
                          "facetrain runs on cpu, cuda, mps, xpu, not meta"),
    # the training run's folder is not created for a batch normalisation cannot train on
    "train_batch_size_1": (_train_data, [*_TRAIN, "--batch_size", "1"], "--batch_size must be >= 2"),
    "train_warmup_1e308": (_train_data, [*_TRAIN, "--warmup_epochs", "1e308"], "--warmup_epochs must be at most"),
    "train_num_workers_one_too_few": (_train_data, [*_TRAIN, "--num_workers=-2"], "--num_workers must be >= -1"),
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


@pytest.mark.parametrize("case", ["rec_nan_label", "bin_huge_bytes", "align_into_its_input",
                                  "train_empty_identity_folder"])  # no warning line before the error
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


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("verb", [["eval", *_CKPT, "--val_data_path", "{D}"], ["ijb", "--data_root", "{D}", *_CKPT,
                                                                           "--output_dir", "{D}/i", "--gpu", "0"]])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, verb):
    _tiny_model(tmp_path)
    before = _snapshot(tmp_path)
    argv = _argv(verb, tmp_path) + (["--device", "cuda"] if verb[0] == "eval" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this machine has no cuda device" in err, err
    assert _snapshot(tmp_path) == before


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


def test_the_python_api_refuses_a_nan_model_naming_it(tmp_path):
    import facetrain
    from facetrain.compare import compare_images
    from facetrain.errors import ConfigError

    _ckpt(tmp_path, nan=True)
    write_bin(tmp_path / "lfw.bin", faces(20)[0], [True, False] * 5)
    model = facetrain.load_model(tmp_path / "nan.ckpt")
    face = np.ascontiguousarray(faces(1)[0][0][:, :, ::-1])  # an aligned RGB face
    cv2.imwrite(str(tmp_path / "face.png"), faces(1)[0][0])
    message = rf"^{tmp_path / 'nan.ckpt'}: the model gives non-finite \(NaN/inf\) embeddings"

    class Aligned:  # compare's aligner, for faces that are already aligned
        def align(self, rgb, name):
            return rgb

    for call in (lambda: facetrain.embed(model, [face]), lambda: facetrain.verify(model, face, face, threshold=0.3),
                 lambda: facetrain.evaluate(tmp_path / "nan.ckpt", tmp_path, progress=False),
                 lambda: compare_images(model, [tmp_path / "face.png"] * 2, Aligned())):
        with pytest.raises(ConfigError, match=message):
            call()


_FAKE_KEY = "0123456789abcdef" * 3  # well-formed (40+ characters), known to no server
# name -> (environment, setup(D) -> extra train flags, a fragment the error line must contain). Each runs
# in its own process: W&B reads its environment once per process.
WANDB_CASES: dict[str, tuple[dict[str, str], Callable[[Path], list[str]], str]] = {
    "online_without_api_key": ({"WANDB_MODE": "online"}, lambda d: [], "no W&B API key"),
    "malformed_api_key": ({"WANDB_MODE": "online", "WANDB_API_KEY": "x"}, lambda d: [], "API key must have"),
    "server_unreachable": ({"WANDB_MODE": "online", "WANDB_API_KEY": _FAKE_KEY, "WANDB_BASE_URL": "http://127.0.0.1:9",
                            "WANDB_INIT_TIMEOUT": "3"}, lambda d: [], "W&B did not start"),
    "empty_run_id": ({"WANDB_MODE": "offline"}, lambda d: _resume_with_run_id(d, b""), "holds no W&B run id (empty)"),
    "odd_run_id": ({"WANDB_MODE": "offline"}, lambda d: _resume_with_run_id(d, b"\xff/../x:y\n"), "holds no W&B run id"),
}


def _resume_with_run_id(root: Path, content: bytes) -> list[str]:
    run = root / "run"
    (run / "wandb").mkdir(parents=True)
    (run / "wandb" / "facetrain-run-id").write_bytes(content)
    (run / "last.ckpt").write_bytes(b"a checkpoint")  # never read: the W&B check comes first
    return ["--resume_from_checkpoint", str(run / "last.ckpt")]


@pytest.mark.parametrize("case", sorted(WANDB_CASES))
def test_wandb_that_cannot_start_is_one_line_before_anything_is_written(tmp_path, case):
    pytest.importorskip("wandb")
    from train_fixtures import make_dataset, train_args

    environment, setup, fragment = WANDB_CASES[case]
    work = tmp_path / "work"  # W&B keeps its own logs in HOME, outside
    data = make_dataset(work / "data", classes=2, per_class=4, val_pairs=10)
    extra = setup(work)
    before = _snapshot(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no_netrc"), WANDB_SILENT="true", **environment,
               PYTHONPATH=str(Path(facetrain.__file__).parents[1]))  # this code, from any working folder
    proc = subprocess.run([sys.executable, "-m", "facetrain", "train",
                           *train_args(data, work / "run", "--use_wandb", "--epochs", "1", *extra)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=work)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr
    assert _snapshot(work) == before and (work / "run").exists() == bool(extra)
