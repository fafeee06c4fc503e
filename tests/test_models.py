import pytest
import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.models import build_model, canonical_name, list_models
from facetrain.models.iresnet import normalize_embedding


def _on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return build_model(name)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected",
    [("ir_18", 24_020_352), ("ir_34", 34_134_080), ("ir_50", 43_585_600), ("ir_101", 65_150_912),
     ("ir_se_50", 43_808_320)],
)
def test_parameter_counts_match_adaface(name, expected):
    assert _num_params(_on_meta(name)) == expected


def test_registry_names_and_alias():
    assert list_models() == ["ir_18", "ir_34", "ir_50", "ir_101", "ir_152", "ir_200",
                             "ir_se_50", "ir_se_101", "ir_se_152", "ir_se_200", "mobilefacenet", "tinynet"]
    assert canonical_name("ir_100") == "ir_101"
    model = _on_meta("ir_100")
    assert model.arch == "ir_101" and model.embedding_size == 512
    with pytest.raises(ConfigError, match="unknown architecture 'ir_77'"):
        build_model("ir_77")


def test_state_dict_keys_follow_adaface_net_py():
    keys = set(_on_meta("ir_se_50").state_dict())
    # stem, first unit (max-pool shortcut, no parameters), SE inside res_layer, conv shortcut of stage 2
    for key in ["input_layer.0.weight", "input_layer.1.running_mean", "input_layer.2.weight",
                "body.0.res_layer.0.weight", "body.0.res_layer.1.weight", "body.0.res_layer.3.weight",
                "body.0.res_layer.4.weight", "body.0.res_layer.5.num_batches_tracked",
                "body.0.res_layer.se_block.fc1.weight", "body.0.res_layer.se_block.fc2.weight",
                "body.3.shortcut_layer.0.weight", "body.3.shortcut_layer.1.running_var",
                "output_layer.0.weight", "output_layer.3.weight", "output_layer.3.bias",
                "output_layer.4.running_mean"]:
        assert key in keys, key
    assert not any(k.startswith("body.0.shortcut_layer") for k in keys)
    assert "output_layer.4.weight" not in keys  # BatchNorm1d(affine=False)
    assert len([k for k in keys if k.endswith("se_block.fc1.weight")]) == 24
    bottleneck = _on_meta("ir_152").state_dict()
    assert bottleneck["body.0.res_layer.1.weight"].shape == (64, 64, 1, 1)
    assert bottleneck["body.0.res_layer.7.weight"].shape == (256, 64, 1, 1)
    assert bottleneck["output_layer.3.weight"].shape == (512, 2048 * 7 * 7)


def test_initialisation_as_adaface():
    torch.manual_seed(0)
    model = build_model("ir_18")
    conv = model.body[4].res_layer[1]  # first unit of stage 3: 3x3, 128 -> 256 channels
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    linear = model.output_layer[3]
    assert linear.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)
    assert torch.all(linear.bias == 0)
    bn = model.body[0].res_layer[0]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize("name", ["ir_18", "mobilefacenet", "tinynet"])
def test_forward_returns_unit_embedding_and_norm(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        emb, norm = model(x)
        emb_cl, norm_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert emb.shape == (2, 512) and norm.shape == (2, 1)
    assert emb.dtype == norm.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert torch.all(norm > 0)
    torch.testing.assert_close(emb_cl, emb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(norm_cl, norm, atol=1e-4, rtol=1e-4)


def test_norm_is_float32_under_low_precision():
    features = (torch.randn(4, 512) * 30).to(torch.bfloat16)
    emb, norm = normalize_embedding(features)
    assert emb.dtype == norm.dtype == torch.float32
    torch.testing.assert_close(norm, features.float().norm(dim=1, keepdim=True))
    torch.testing.assert_close(emb * norm, features.float())


def test_mobilefacenet_is_small():
    model = build_model("mobilefacenet")
    assert 1_000_000 < _num_params(model) < 2_000_000
    assert model.embedding_size == 512


def test_tinynet_is_much_cheaper_than_mobilefacenet():
    from torch.utils.flop_counter import FlopCounterMode

    def macs(name):
        with FlopCounterMode(display=False) as counter:
            build_model(name).eval()(torch.randn(1, 3, 112, 112))
        return counter.get_total_flops() / 2

    assert macs("tinynet") < 0.2 * macs("mobilefacenet")


@pytest.mark.parametrize("name", ["mobilefacenet", "tinynet"])
def test_training_step_backpropagates_to_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    emb, norm = model(torch.randn(2, 3, 112, 112))
    (emb.sum() + norm.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
