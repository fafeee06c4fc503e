"""The margin alone (the half of a head that Partial FC shares with the whole head): rows whose class
is not among the given columns (label -1) keep s*cos everywhere, and the whole head's state-dict
keeps AdaFace's flat keys."""
import pytest
import torch
import torch.nn.functional as F

from facetrain.heads import build_head, build_margin


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_rows_without_their_class_keep_plain_scaled_cosines(name):
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(4, 6, generator=g) * 1.6 - 0.8
    norms = torch.rand(4, 1, generator=g) * 30 + 1
    margin = build_margin(name).eval()
    out = margin(cos, torch.tensor([2, -1, 0, -1]), norms)
    torch.testing.assert_close(out[1], 64.0 * cos[1])
    torch.testing.assert_close(out[3], 64.0 * cos[3])
    # rows with a class: only that column moves, and it moves down (a margin makes the class harder)
    assert out[0, 2] < 64.0 * cos[0, 2] and out[2, 0] < 64.0 * cos[2, 0]
    torch.testing.assert_close(out[0, [0, 1, 3, 4, 5]], 64.0 * cos[0, [0, 1, 3, 4, 5]])


def test_margin_with_all_labels_present_equals_the_whole_head():
    torch.manual_seed(1)
    head = build_head("adaface", 8, 5).train()
    twin = build_margin("adaface").train()
    emb = F.normalize(torch.randn(6, 8), dim=1)
    norms, labels = torch.rand(6, 1) * 40, torch.randint(0, 5, (6,))
    cos = emb @ F.normalize(head.kernel.detach(), dim=0)
    torch.testing.assert_close(head(emb, norms, labels), twin(cos, labels, norms))
    assert twin.batch_mean.item() == head.batch_mean.item() != 20.0


def test_whole_head_state_dict_has_adaface_keys_in_order_and_loads_them():
    head = build_head("adaface", 8, 5)
    head.batch_mean.fill_(17.5)
    state = head.state_dict()
    assert list(state) == ["kernel", "t", "batch_mean", "batch_std"]
    other = build_head("adaface", 8, 5)
    other.load_state_dict(state, strict=True)
    assert other.batch_mean.item() == 17.5 and torch.equal(other.kernel, head.kernel)
    with pytest.raises(RuntimeError, match="margin.batch_mean|batch_mean"):
        build_head("adaface", 8, 5).load_state_dict({"kernel": state["kernel"]}, strict=True)
