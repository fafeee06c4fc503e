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
