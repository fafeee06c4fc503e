"""AdaFace's margin against the paper's formula over the whole range of zhat, written out here.

Constants are the published ones (Kim et al., CVPR 2022, and mk-minchul/AdaFace head.py), typed
in: m=0.4, h=0.333, s=64, t_alpha=0.01, eps=1e-3, batch_mean starts at 20, batch_std at 100,
norms clipped to [0.001, 100]. Reference (per sample, in float64):
    in training: mu <- t_alpha * mean(n) + (1 - t_alpha) * mu; sigma likewise with std(n) (ddof 1),
                 BEFORE zhat is computed from them;
    zhat = clip(h * (n - mu) / (sigma + eps), -1, 1);
    logit_y = s * (cos(clip(acos(c) - m * zhat, eps, pi - eps)) - (m + m * zhat)).
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from facetrain.errors import ConfigError
from facetrain.heads import AdaFace, ArcFace, CosFace, build_head, build_margin

E, C = 8, 5
PAPER = dict(m=0.4, h=0.333, s=64.0, t_alpha=0.01)
EPS = 1e-3


def _zhat(norm: float, mean: float, std: float, h: float) -> float:
    n = min(max(norm, 0.001), 100.0)
    return min(max(h * (n - mean) / (std + EPS), -1.0), 1.0)


def _target(cos: float, zhat: float, m: float, s: float) -> float:
    theta = min(max(math.acos(cos) - m * zhat, EPS), math.pi - EPS)
    return s * (math.cos(theta) - (m + m * zhat))


def _cosines(head, emb) -> torch.Tensor:
    w = head.kernel.detach().double()
    return emb.double() @ (w / w.norm(dim=0, keepdim=True))


def _expected(head, emb, norms, labels, mean, std, h, m=0.4, s=64.0) -> torch.Tensor:
    cos = _cosines(head, emb).clamp(-1 + EPS, 1 - EPS)
    out = cos * s
    for i in range(len(labels)):
        c = cos[i, labels[i]].item()
        out[i, labels[i]] = _target(c, _zhat(norms[i].item(), mean, std, h), m, s)
    return out


def _batch(norm_values, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(len(norm_values), E, generator=g), dim=1)
    labels = torch.arange(len(norm_values)) % C
    return emb, torch.tensor(norm_values, dtype=torch.float32).view(-1, 1), labels


def _at_cosine(head, labels, target_cos: float, seed=0) -> torch.Tensor:
    """Unit embeddings whose cosine to their own class centre is `target_cos`."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(head.kernel.detach()[:, labels].T, dim=1)
    noise = torch.randn(len(labels), E, generator=g)
    ortho = F.normalize(noise - (noise * centres).sum(1, keepdim=True) * centres, dim=1)
    return target_cos * centres + math.sqrt(1 - target_cos**2) * ortho


def test_published_constructor_defaults():
    """AdaFace's head.py: embedding 512, 70722 classes (WebFace4M), ArcFace m=0.5, CosFace m=0.4, s=64."""
    for cls, m in ((AdaFace, 0.4), (ArcFace, 0.5), (CosFace, 0.4)):
        params = inspect.signature(cls).parameters
        assert (params["embedding_size"].default, params["class_num"].default) == (512, 70722)
        assert (params["m"].default, params["s"].default) == (m, 64.0)
    assert (ArcFace(E, C).m, ArcFace(E, C).s, CosFace(E, C).m, CosFace(E, C).s) == (0.5, 64.0, 0.4, 64.0)
    assert (build_margin("arcface").m, build_margin("cosface").m, build_margin("adaface").m) == (0.5, 0.4, 0.4)
    adaface = build_margin("adaface")  # AdaFace's published h = 0.333 and t_alpha = 0.01 (head.py)
    assert (adaface.h, adaface.t_alpha, adaface.s) == (0.333, 0.01, 64.0)


def test_paper_defaults():
    head = AdaFace(E, C)
    assert (head.m, head.h, head.s, head.t_alpha) == (0.4, 0.333, 64.0, 0.01)
    assert (head.batch_mean.item(), head.batch_std.item(), head.t.item()) == (20.0, 100.0, 0.0)
    built = build_head("adaface", E, C)
    assert (built.m, built.h, built.s, built.t_alpha) == (0.4, 0.333, 64.0, 0.01)
    assert built.hparams() == {"head": "adaface", "m": 0.4, "h": 0.333, "s": 64.0, "t_alpha": 0.01,
                               "class_num": C, "embedding_size": E}


@pytest.mark.parametrize("h", [0.333, 1.0])
def test_zhat_over_minus_one_to_one(h):
    """Frozen statistics mu=20, sigma=5: the norms give zhat from below -1 (clipped) to above 1 (clipped)."""
    torch.manual_seed(0)
    head = AdaFace(E, C, h=h).eval()
    head.batch_mean.fill_(20.0)
    head.batch_std.fill_(5.0)
    # 150: above the norm clip of 100; -3 and 0: below the clip of 0.001
    values = [-3.0, 0.0, 2.0, 5.0, 10.0, 14.0, 17.5, 20.0, 22.0, 26.0, 31.0, 40.0, 60.0, 150.0]
    emb, norms, labels = _batch(values)
    zhats = [_zhat(v, 20.0, 5.0, h) for v in values]
    assert min(zhats) == -1.0 and max(zhats) == 1.0 and any(-1 < z < -0.3 for z in zhats) and any(0.3 < z < 1 for z in zhats)
    out = head(emb, norms, labels).double()
    torch.testing.assert_close(out, _expected(head, emb, norms, labels, 20.0, 5.0, h), atol=2e-4, rtol=0)


def test_clip_is_applied_after_multiplying_by_h():
    """h * clip(x) and clip(h * x) differ once |x| > 1: with h=0.333 zhat reaches 1, not 0.333."""
    torch.manual_seed(1)
    head = AdaFace(E, C).eval()
    head.batch_mean.fill_(20.0)
    head.batch_std.fill_(5.0)
    emb, norms, labels = _batch([50.0, 0.5])  # (n - mu) / sigma = +6 and -3.9
    emb = _at_cosine(head, labels, 0.6)
    out = head(emb, norms, labels).double()
    expected = _expected(head, emb, norms, labels, 20.0, 5.0, 0.333)
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=0)
    cos = _cosines(head, emb)[0, labels[0]].item()
    wrong_order = _target(cos, 0.333 * 1.0, 0.4, 64.0)  # h times the clipped value
    assert abs(out[0, labels[0]].item() - wrong_order) > 1.0


def test_norms_are_clipped_to_the_published_range():
    """mu=0, sigma=0.001: a norm of 0 counts as 0.001 (zhat 0.5), not as 0 (zhat 0)."""
    torch.manual_seed(2)
    head = AdaFace(E, C, h=1.0).eval()
    head.batch_mean.fill_(0.0)
    head.batch_std.fill_(0.001)
    emb, norms, labels = _batch([0.0, -5.0, 0.0005])
    emb = _at_cosine(head, labels, 0.6)
    out = head(emb, norms, labels).double()
    torch.testing.assert_close(out, _expected(head, emb, norms, labels, 0.0, 0.001, 1.0), atol=2e-4, rtol=0)
    cos = _cosines(head, emb)[0, labels[0]].item()
    assert abs(out[0, labels[0]].item() - _target(cos, 0.0, 0.4, 64.0)) > 1.0
    # above: mu=20, sigma=100, h=1: a norm of 150 counts as 100 (zhat 0.8, not the clip's 1)
    head.batch_mean.fill_(20.0)
    head.batch_std.fill_(100.0)
    emb, norms, labels = _batch([150.0, 100.0, 60.0])
    emb = _at_cosine(head, labels, 0.6)
    out = head(emb, norms, labels).double()
    torch.testing.assert_close(out, _expected(head, emb, norms, labels, 20.0, 100.0, 1.0), atol=2e-4, rtol=0)
    assert out[0, labels[0]].item() == pytest.approx(out[1, labels[1]].item(), abs=2e-4)


def test_statistics_are_updated_before_zhat_is_computed():
    """t_alpha=0.5 makes 'statistics before' and 'after the EMA update' far apart, so the order shows."""
    torch.manual_seed(3)
    head = AdaFace(E, C, h=1.0, t_alpha=0.5).train()
    values = [5.0, 12.0, 30.0, 44.0, 61.0, 90.0]
    emb, norms, labels = _batch(values)
    n = torch.tensor(values, dtype=torch.float64)
    mean = 0.5 * n.mean().item() + 0.5 * 20.0
    std = 0.5 * n.std(unbiased=True).item() + 0.5 * 100.0
    out = head(emb, norms, labels).double()
    torch.testing.assert_close(out, _expected(head, emb, norms, labels, mean, std, 1.0), atol=2e-4, rtol=0)
    before = _expected(head, emb, norms, labels, 20.0, 100.0, 1.0)
    assert (out - before).abs().max() > 0.5
    assert head.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert head.batch_std.item() == pytest.approx(std, rel=1e-6)
    # a second step moves the statistics again, from where the first left them
    head(emb, norms * 0.5, labels)
    assert head.batch_mean.item() == pytest.approx(0.5 * 0.5 * n.mean().item() + 0.5 * mean, rel=1e-6)
    assert head.batch_std.item() == pytest.approx(0.5 * 0.5 * n.std().item() + 0.5 * std, rel=1e-6)


def test_paper_ema_rate_with_a_tight_tolerance():
    """With the paper's t_alpha=0.01 the order changes logits by ~1e-3: compared at 1e-4."""
    torch.manual_seed(4)
    head = AdaFace(E, C).train()
    values = [60.0, 70.0, 80.0, 90.0, 95.0, 99.0]
    emb, norms, labels = _batch(values)
    n = torch.tensor(values, dtype=torch.float64)
    mean = 0.01 * n.mean().item() + 0.99 * 20.0
    std = 0.01 * n.std(unbiased=True).item() + 0.99 * 100.0
    out = head(emb, norms, labels).double()
    expected = _expected(head, emb, norms, labels, mean, std, 0.333)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert (_expected(head, emb, norms, labels, 20.0, 100.0, 0.333) - expected).abs().max() > 5e-4


def test_a_batch_of_two_updates_the_statistics():
    head = AdaFace(E, C, t_alpha=0.5).train()
    emb, norms, labels = _batch([10.0, 40.0])
    head(emb, norms, labels)
    assert head.batch_mean.item() == pytest.approx(0.5 * 25.0 + 0.5 * 20.0)
    assert head.batch_std.item() == pytest.approx(0.5 * math.sqrt(450.0) + 0.5 * 100.0, rel=1e-6)  # ddof 1


def test_a_batch_of_one_keeps_the_statistics_and_gives_finite_logits():
    torch.manual_seed(5)
    head = AdaFace(E, C, h=1.0, t_alpha=0.5).train()
    emb, norms, labels = _batch([37.0])
    out = head(emb, norms, labels)
    assert torch.isfinite(out).all()
    assert (head.batch_mean.item(), head.batch_std.item()) == (20.0, 100.0)
    torch.testing.assert_close(out.double(), _expected(head, emb, norms, labels, 20.0, 100.0, 1.0), atol=2e-4, rtol=0)


def test_eval_mode_never_moves_the_statistics():
    head = AdaFace(E, C, t_alpha=1.0).eval()
    emb, norms, labels = _batch([3.0, 50.0, 70.0])
    head(emb, norms, labels)
    assert (head.batch_mean.item(), head.batch_std.item()) == (20.0, 100.0)


def test_the_margin_alone_on_a_shard_of_classes():
    """build_margin (Partial FC's view): cosines in, logits out; rows whose class the shard does not
    hold (label -1) keep s*cos everywhere, and still count in AdaFace's batch statistics."""
    margin = build_margin("adaface", h=1.0, t_alpha=0.5).train()
    assert (margin.m, margin.h, margin.s, margin.t_alpha) == (0.4, 1.0, 64.0, 0.5)
    cos = torch.tensor([[0.6, 0.1, -0.2], [0.3, 0.8, 0.0], [0.2, 0.4, 0.5]])
    labels = torch.tensor([0, -1, 2])
    values = [30.0, 50.0, 10.0]
    norms = torch.tensor(values).view(-1, 1)
    out = margin(cos, labels, norms).double()
    n = torch.tensor(values, dtype=torch.float64)
    mean, std = 0.5 * n.mean().item() + 0.5 * 20.0, 0.5 * n.std().item() + 0.5 * 100.0  # all three rows
    expected = cos.double() * 64.0
    expected[0, 0] = _target(0.6, _zhat(30.0, mean, std, 1.0), 0.4, 64.0)
    expected[2, 2] = _target(0.5, _zhat(10.0, mean, std, 1.0), 0.4, 64.0)
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=0)
    assert margin.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert build_margin("arcface").hparams() == {"head": "arcface", "m": 0.5, "s": 64.0}
    assert build_margin("cosface", m=0.35).hparams() == {"head": "cosface", "m": 0.35, "s": 64.0}


def test_statistics_load_back_from_adaface_key_names():
    trained = AdaFace(E, C)
    trained.batch_mean.fill_(31.0)
    trained.batch_std.fill_(7.0)
    state = trained.state_dict()
    assert set(state) == {"kernel", "t", "batch_mean", "batch_std"}  # AdaFace's names, no "margin."
    fresh = AdaFace(E, C)
    fresh.load_state_dict(state)
    assert (fresh.batch_mean.item(), fresh.batch_std.item()) == (31.0, 7.0)
    assert torch.equal(fresh.kernel, trained.kernel)


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_exact_unit_cosines_are_clamped_and_keep_gradients_finite(name):
    """cos = +-1 exactly (an embedding on its class centre, or opposite): clamped to +-(1 - eps) first,
    so acos has finite gradients; non-target entries are s * clamped cosines."""
    margin = build_margin(name).eval()
    eps = {"adaface": 1e-3, "arcface": 1e-4, "cosface": 1e-4}[name]
    cos = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.2]], requires_grad=True)
    labels = torch.tensor([0, 0])
    out = margin(cos, labels, torch.full((2, 1), 20.0))
    assert out[0, 1].item() == pytest.approx(64.0 * (-1 + eps), abs=1e-5)
    assert out[1, 1].item() == pytest.approx(64.0 * (1 - eps), abs=1e-5)
    out[:, 0].sum().backward()
    assert torch.isfinite(cos.grad).all()


@pytest.mark.parametrize("cosine, zhat_sign", [(0.995, 1.0), (-0.995, -1.0)])
def test_adaface_angle_stays_inside_zero_to_pi(cosine, zhat_sign):
    """theta - m*zhat leaves [eps, pi - eps] near cos = +-1: it is clipped (no wrap-around of cos)."""
    torch.manual_seed(6)
    head = AdaFace(E, C, h=1.0).eval()
    head.batch_mean.fill_(20.0)
    head.batch_std.fill_(5.0)
    emb, norms, labels = _batch([20.0 + 10.0 * zhat_sign] * 3)  # zhat = +-1 (clipped from +-2)
    emb = _at_cosine(head, labels, cosine)
    out = head(emb, norms, labels).double()
    torch.testing.assert_close(out, _expected(head, emb, norms, labels, 20.0, 5.0, 1.0), atol=2e-4, rtol=0)
    theta = EPS if cosine > 0 else math.pi - EPS
    target = 64.0 * (math.cos(theta) - (0.4 + 0.4 * zhat_sign))
    assert out[0, labels[0]].item() == pytest.approx(target, abs=1e-3)


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_every_setting_reaches_the_margin(name):
    head = build_head(name, E, C, m=0.3, h=0.7, s=30.0, t_alpha=0.2)
    margin = build_margin(name, m=0.3, h=0.7, s=30.0, t_alpha=0.2)
    for module in (head, margin):
        assert (module.m, module.s) == (0.3, 30.0)
        if name == "adaface":
            assert (module.h, module.t_alpha) == (0.7, 0.2)
    assert head.kernel.shape == (E, C)
    with pytest.raises(ConfigError, match="unknown head 'sphereface'; choose one of: adaface, arcface, cosface"):
        build_head("sphereface", E, C)


def test_class_centres_start_as_normalised_uniform_columns():
    """AdaFace's init: uniform(-1, 1) entries, every column scaled to unit norm (kurtosis of a uniform: 1.8)."""
    torch.manual_seed(0)
    kernel = build_head("adaface", 512, 300).kernel.detach().double()
    assert (kernel.norm(dim=0) - 1).abs().max() < 1e-6
    assert abs(kernel.mean().item()) < 2e-4 and 0.48 < (kernel < 0).double().mean().item() < 0.52
    kurtosis = (kernel**4).mean() / (kernel**2).mean() ** 2
    assert 1.75 < kurtosis.item() < 1.85
    assert kernel.abs().max().item() < 1 / math.sqrt(512 / 3) * 1.25  # |entry| <= 1 / (column norm ~ sqrt(E/3))
