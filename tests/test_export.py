"""ONNX and safetensors export, checked against torch with onnxruntime."""
import onnx
import pytest
import torch
from safetensors import safe_open

from facetrain.checkpoint import load_backbone, save_checkpoint
from facetrain.cli import main
from facetrain.export import export_onnx, verify_onnx
from facetrain.models import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export")
    model = build_model("mobilefacenet").eval()
    save_checkpoint(folder / "model.ckpt", model)
    assert main(["export", "--ckpt", str(folder / "model.ckpt"), "--onnx", str(folder / "model.onnx"),
                 "--safetensors", str(folder / "model.safetensors")]) == 0
    return model, folder


def test_onnx_matches_torch_with_a_dynamic_batch(exported, capsys):
    model, folder = exported
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["embedding", "norm"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch_size in (1, 5):  # exported with a batch of 2
        assert verify_onnx(model, folder / "model.onnx", batch_size=batch_size) < 1e-4


def test_verification_detects_a_different_model(exported):
    _, folder = exported
    torch.manual_seed(123)
    assert verify_onnx(build_model("mobilefacenet").eval(), folder / "model.onnx") > 1e-2


def test_safetensors_hold_the_backbone_with_adaface_key_names(exported):
    model, folder = exported
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.metadata()["arch"] == "mobilefacenet"
        assert set(f.keys()) == set(model.state_dict())
    loaded, info = load_backbone(folder / "model.safetensors")
    assert info["arch"] == "mobilefacenet"
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        for a, b in zip(loaded(x), model(x)):
            torch.testing.assert_close(a, b)


def test_export_without_an_output_is_an_error(exported, capsys):
    _, folder = exported
    assert main(["export", "--ckpt", str(folder / "model.ckpt")]) == 1
    assert "nothing to export" in capsys.readouterr().err


@pytest.mark.slow
def test_export_onnx_of_an_ir_backbone(tmp_path):
    model = build_model("ir_18").eval()
    export_onnx(model, tmp_path / "ir18.onnx")
    assert verify_onnx(model, tmp_path / "ir18.onnx", batch_size=2) < 1e-4


def test_safetensors_are_byte_reproducible_and_written_with_the_default_mode(exported, tmp_path):
    import json
    import os
    import struct

    from facetrain.export import safetensors_bytes

    model, folder = exported
    data = (folder / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + length])["__metadata__"]
    assert list(metadata) == sorted(metadata)  # safetensors itself orders them differently from run to run
    state = {"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.float16)}
    assert safetensors_bytes(state, {"x": "1", "arch": "y"}) == safetensors_bytes(state, {"arch": "y", "x": "1"})
    umask = os.umask(0)
    os.umask(umask)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask == (folder / "model.onnx").stat().st_mode & 0o777


def _nan_checkpoint(path, where):
    torch.manual_seed(0)
    model = build_model("tinynet").eval()
    with torch.no_grad():
        if where == "weights":
            next(model.parameters()).fill_(float("nan"))
        else:  # finite weights whose outputs are NaN: a negative variance under the square root
            next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(-1.0)
    save_checkpoint(path, model)
    return path


@pytest.mark.parametrize("where, fragment", [("weights", "holds NaN/inf values"),
                                             ("outputs", "onnxruntime differs from torch by nan")])
def test_export_refuses_a_nan_model_and_writes_nothing(tmp_path, capsys, where, fragment):
    ckpt = _nan_checkpoint(tmp_path / "nan.ckpt", where)
    capsys.readouterr()
    assert main(["export", "--ckpt", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.ckpt"]


def test_integer_weights_are_warned_about_not_cast_silently(tmp_path):
    model = build_model("tinynet").eval()
    state = {k: (v.round().to(torch.int8) if v.dim() == 4 else v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "q.ckpt")
    with pytest.warns(UserWarning, match=r"q.ckpt: \d+ weight tensor\(s\) are stored as torch.int8"):
        load_backbone(tmp_path / "q.ckpt")
