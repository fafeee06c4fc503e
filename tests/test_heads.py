import math

import pytest
import torch
import torch.nn.functional as F

from facetrain.errors import ConfigError
from facetrain.heads import AdaFace, ArcFace, CosFace, build_head

B, E, C = 6, 16, 10


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(B, E, generator=g)
    norms = raw.norm(dim=1, keepdim=True) * 4 + torch.rand(B, 1, generator=g) * 30
    labels = torch.randint(0, C, (B,), generator=g)
    return F.normalize(raw, dim=1), norms, labels


def _reference_cosines(head, emb):
    """Plain per-entry cosines, clamped like the paper's implementations."""
    w = head.kernel.detach().double()
    cos = torch.empty(B, C, dtype=torch.float64)
    for i in range(B):
        for j in range(C):
            cos[i, j] = emb[i].double() @ w[:, j] / w[:, j].norm()
    return cos.clamp(-1 + head.eps, 1 - head.eps)


def _reference(head, emb, norms, labels, target_fn):
    cos = _reference_cosines(head, emb)
    out = cos.clone()
    for i in range(B):
        out[i, labels[i]] = target_fn(cos[i, labels[i]].item(), norms[i, 0].item())
    return out * head.s


def test_kernel_init_has_unit_columns():
    head = build_head("adaface", E, C)
    assert head.kernel.shape == (E, C)
    torch.testing.assert_close(head.kernel.norm(dim=0), torch.ones(C))
    assert set(head.state_dict()) == {"kernel", "t", "batch_mean", "batch_std"}
    for name, value in [("t", 0.0), ("batch_mean", 20.0), ("batch_std", 100.0)]:
        buffer = head.state_dict()[name]
        assert buffer.shape == (1,) and buffer.dtype == torch.float32 and buffer.item() == value
    assert set(build_head("arcface", E, C).state_dict()) == {"kernel"}


def test_defaults_and_overrides():
    ada = build_head("adaface", E, C)
    assert (ada.m, ada.h, ada.s, ada.t_alpha, ada.eps) == (0.4, 0.333, 64.0, 0.01, 1e-3)
    arc = build_head("arcface", E, C, h=0.0, t_alpha=1.0)  # AdaFace-only options are ignored
    assert (arc.m, arc.s, arc.eps) == (0.5, 64.0, 1e-4)
    cos = build_head("cosface", E, C, m=0.35, s=30.0)
    assert (cos.m, cos.s) == (0.35, 30.0)
    assert build_head("adaface", E, C, m=0.5, h=0.0).h == 0.0
    with pytest.raises(ConfigError, match="unknown head 'sphereface'"):
        build_head("sphereface", E, C)


def test_cosface_matches_formula():
    torch.manual_seed(1)
    head = CosFace(E, C)
    emb, norms, labels = _inputs()
    expected = _reference(head, emb, norms, labels, lambda c, n: c - 0.4)
    torch.testing.assert_close(head(emb, norms, labels).double(), expected, atol=1e-4, rtol=1e-5)


def test_arcface_matches_formula_including_the_clip_near_pi():
    torch.manual_seed(2)
    head = ArcFace(E, C)
    emb, norms, labels = _inputs()
    # make sample 0 nearly opposite to its class so theta + m passes pi and gets clipped
    emb[0] = -F.normalize(head.kernel.detach()[:, labels[0]], dim=0)

    def target(c, n):
        return math.cos(min(max(math.acos(c) + 0.5, 1e-4), math.pi - 1e-4))

    expected = _reference(head, emb, norms, labels, target)
    torch.testing.assert_close(head(emb, norms, labels).double(), expected, atol=1e-3, rtol=1e-5)
    assert expected[0, labels[0]] == pytest.approx(64 * math.cos(math.pi - 1e-4))


def _adaface_target(mean, std, m=0.4, h=0.333, eps=1e-3):
    def target(c, n):
        zhat = min(max(h * (min(max(n, 0.001), 100) - mean) / (std + eps), -1.0), 1.0)
        theta = min(max(math.acos(c) - m * zhat, eps), math.pi - eps)
        return math.cos(theta) - (m + m * zhat)

    return target


def test_adaface_matches_formula_and_updates_ema_once():
    torch.manual_seed(3)
    head = AdaFace(E, C).train()
    emb, norms, labels = _inputs()
    safe = norms.clamp(0.001, 100)
    mean = 0.01 * safe.mean().item() + 0.99 * 20
    std = 0.01 * safe.std(unbiased=True).item() + 0.99 * 100
    expected = _reference(head, emb, norms, labels, _adaface_target(mean, std))
    out = head(emb, norms, labels)
    torch.testing.assert_close(out.double(), expected, atol=1e-3, rtol=1e-5)
    assert head.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert head.batch_std.item() == pytest.approx(std, rel=1e-6)
    assert head.t.item() == 0.0


def test_adaface_eval_mode_leaves_statistics_alone():
    head = AdaFace(E, C, t_alpha=1.0).eval()
    emb, norms, labels = _inputs()
    head(emb, norms, labels)
    assert (head.batch_mean.item(), head.batch_std.item()) == (20.0, 100.0)


@pytest.mark.parametrize("norm, twin", [(1.0, "arcface"), (20.0, "cosface")])
def test_adaface_extremes_are_arcface_and_cosface(norm, twin):
    """zhat = -1 (low norm) -> angular margin m only; zhat = 0 (mean norm) -> additive margin m only."""
    torch.manual_seed(4)
    ada = AdaFace(E, C, m=0.4, h=1.0).eval()
    ada.batch_mean.fill_(20.0)
    ada.batch_std.fill_(5.0)
    other = build_head(twin, E, C, m=0.4)
    other.eps = ada.eps
    other.kernel.data.copy_(ada.kernel.data)
    emb, _, labels = _inputs()
    norms = torch.full((B, 1), norm)  # 1.0: zhat = (1 - 20) / 5 clipped to -1; 20.0: zhat = 0
    torch.testing.assert_close(ada(emb, norms, labels), other(emb, norms, labels), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_gradients_reach_embeddings_and_kernel_but_not_norms(name):
    torch.manual_seed(5)
    head = build_head(name, E, C).train()
    emb, norms, labels = _inputs()
    emb.requires_grad_(True)
    norms.requires_grad_(True)
    loss = F.cross_entropy(head(emb, norms, labels), labels)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert head.kernel.grad is not None and head.kernel.grad.abs().sum() > 0
    assert norms.grad is None  # AdaFace detaches the norms: quality steers the margin, it is not trained


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_logits_stay_float32_under_bf16_autocast(name):
    torch.manual_seed(6)
    head = build_head(name, E, C).eval()
    emb, norms, labels = _inputs()
    reference = head(emb, norms, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(emb.bfloat16(), norms.bfloat16(), labels)
    assert out.dtype == torch.float32
    # only the bf16 rounding of the inputs remains, far below what bf16 logits would lose (~0.25 at 64)
    torch.testing.assert_close(out, reference, atol=0.2, rtol=0)
    assert (out - reference).abs().mean() < 0.1


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_full_head_and_partial_fc_answer_the_same_training_calls(name, tmp_path):
    """One interface: at sample rate 1 in one process, Partial FC's loss is the full head's, and both
    save to and load from a checkpoint's head state through the same calls."""
    from facetrain.heads import build_margin
    from facetrain.heads.partial_fc import PartialFC

    full = build_head(name, embedding_size=E, class_num=C)
    pfc = PartialFC(build_margin(name), E, C, sample_rate=1.0, seed=3)
    with torch.no_grad():
        pfc.kernel.copy_(full.kernel)
    emb, norms, labels = _inputs(4)
    assert torch.allclose(pfc.loss(emb, norms, labels), full.loss(emb, norms, labels), rtol=0, atol=1e-5)
    assert full.ddp_ignored_names("head.") == [] and "head.kernel" in pfc.ddp_ignored_names("head.")

    optimizer = torch.optim.SGD(full.parameters(), lr=0.1, momentum=0.9)
    saved, extra = full.checkpoint_state(optimizer, step=0)
    assert saved is full and extra == {}
    head_state = {k: v.clone() for k, v in full.state_dict().items()}
    fresh = PartialFC(build_margin(name), E, C, sample_rate=1.0, seed=4)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    # a full head's checkpoint loads into Partial FC (its columns) through the same call
    fresh.load_checkpoint_state(tmp_path / "x.ckpt", head_state, {"optimizer_states": [optimizer.state_dict()]},
                                fresh_optimizer)
    assert torch.equal(fresh.kernel, full.kernel)
    with pytest.raises(ConfigError, match="holds a Partial FC head"):
        full.load_checkpoint_state(tmp_path / "x.ckpt", head_state, {"partial_fc": {}}, optimizer)
