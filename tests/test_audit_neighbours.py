"""Chunked exact search (float32 and bfloat16-with-rescoring paths) against a brute-force matrix; union-find."""
import numpy as np
import pytest
import torch

from facetrain.audit.clusters import collision_clusters
from facetrain.audit.neighbours import BF16_MARGIN, search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    keys = _unit(rng.standard_normal((3000, 48)))
    queries = _unit(rng.standard_normal((500, 48)))
    queries[:60] = _unit(keys[:60] + 0.4 * rng.standard_normal((60, 48)))  # near duplicates around the threshold
    queries[60] = keys[7]  # an exact copy
    return queries, keys


@pytest.mark.parametrize("low_precision", [False, True])
def test_pairs_and_nearest_equal_brute_force_across_tiles(sets, low_precision):
    queries, keys = sets
    full = queries @ keys.T
    found = search(queries, keys, 0.55, low_precision=low_precision, tile_bytes=64 * 512 * 4, key_block=512)  # 8 x 6 tiles
    rows, cols = np.nonzero(full >= 0.55)
    assert len(rows) > 30
    np.testing.assert_array_equal(found.query, rows)
    np.testing.assert_array_equal(found.key, cols)
    np.testing.assert_allclose(found.score, full[rows, cols], atol=1e-5)
    np.testing.assert_array_equal(found.best_key, full.argmax(1))
    np.testing.assert_allclose(found.best_score, full.max(1), atol=1e-5)
    assert found.best_key[60] == 7 and found.best_score[60] == pytest.approx(1.0, abs=1e-5)


def test_exclude_self_never_pairs_a_row_with_itself(sets):
    _, keys = sets
    keys = keys[:400]
    full = keys @ keys.T
    np.fill_diagonal(full, -np.inf)
    for low in (False, True):
        found = search(keys, keys, 0.3, exclude_self=True, low_precision=low, tile_bytes=96 * 128 * 4, key_block=128)
        np.testing.assert_array_equal(found.best_key, full.argmax(1))
        assert not np.any(found.query == found.key)
        assert len(found.query) == int((full >= 0.3).sum())


def test_bfloat16_error_stays_inside_the_rescoring_margin():
    rng = np.random.default_rng(1)
    a = _unit(rng.standard_normal((300, 512)))
    b = np.concatenate([a[:100], _unit(a[100:200] + 0.1 * rng.standard_normal((100, 512))),
                        _unit(rng.standard_normal((100, 512)))])
    exact = torch.from_numpy(a) @ torch.from_numpy(b).T
    low = (torch.from_numpy(a).bfloat16() @ torch.from_numpy(b).bfloat16().T).float()
    assert float((exact - low).abs().max()) < BF16_MARGIN


def test_no_keys_above_threshold_gives_empty_pairs():
    rng = np.random.default_rng(2)
    found = search(_unit(rng.standard_normal((5, 8))), _unit(rng.standard_normal((7, 8))), 1.5)
    assert found.query.shape == (0,) and found.best_key.shape == (5,)


def test_collision_clusters_are_connected_components():
    assert collision_clusters([(3, 4), (1, 2), (4, 9), (2, 1), (7, 8)]) == [[3, 4, 9], [1, 2], [7, 8]]
    assert collision_clusters([]) == []


def test_nearest_is_exact_when_many_keys_crowd_the_bf16_margin():
    rng = np.random.default_rng(3)
    keys = _unit(rng.standard_normal((4000, 512)))  # 512-d random cosines: dozens within 0.025 of each row's best
    queries = _unit(rng.standard_normal((200, 512)))
    full = queries @ keys.T
    found = search(queries, keys, None, low_precision=True, key_block=1000)
    np.testing.assert_array_equal(found.best_key, full.argmax(1))
