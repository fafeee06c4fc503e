"""Identity similarity (audit.identities): the centroid cosine corrected for each identity's spread, so that two
folders of one person score near 1 however varied its images, while different people stay apart."""
import numpy as np
import pytest

from facetrain.audit.identities import (SIMILARITY_SCALE, centroids, identity_neighbours, identity_stats, reliability,
                                        similarity_rows)

D, IMAGES = 64, 12


def _person(rng, direction, spread, n=IMAGES):
    """n unit embeddings whose mean cosine to `direction` is about `spread` (lower: a more varied identity)."""
    noise = rng.normal(size=(n, D))
    noise -= (noise @ direction)[:, None] * direction
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (spread * direction + np.sqrt(1 - spread**2) * noise).astype(np.float32)


def _unit(rng, k):
    v = rng.normal(size=(k, D))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("spread", [0.9, 0.6, 0.45])
def test_two_folders_of_one_person_score_near_one_whatever_its_spread(spread):
    rng = np.random.default_rng(1)
    people = _unit(rng, 40)
    embeddings = np.concatenate([_person(rng, people[0], spread, 2 * IMAGES)] + [_person(rng, p, 0.8) for p in people[1:]])
    labels = np.r_[np.zeros(IMAGES), np.ones(IMAGES), np.repeat(np.arange(2, 41), IMAGES)].astype(np.int64)
    stats = identity_stats(embeddings, labels)
    unit, rows = centroids(stats), similarity_rows(stats)
    cosine, similarity = float(unit[0] @ unit[1]), float(rows[0] @ rows[1])
    assert similarity == pytest.approx(1.0, abs=0.1), (cosine, similarity)
    if spread < 0.5:  # the uncorrected cosine of a varied person's two halves falls to an impostor-like level
        assert cosine < 0.8
    impostors = (rows[1:] @ rows[1:].T)[np.triu_indices(40, 1)]
    assert np.abs(impostors).max() < 0.5 < similarity - 0.4
    found = identity_neighbours(stats, 0.8)
    assert list(zip(found.query, found.key)) == [(0, 1)] and found.score[0] == pytest.approx(similarity, abs=1e-5)


def test_the_correction_is_bounded_and_single_images_are_not_corrected():
    rng = np.random.default_rng(2)
    scattered = _unit(rng, IMAGES).astype(np.float32)  # images that do not agree: no reliable direction
    embeddings = np.concatenate([scattered, _person(rng, _unit(rng, 1)[0], 0.8), _unit(rng, 1).astype(np.float32)])
    labels = np.r_[np.zeros(IMAGES), np.ones(IMAGES), [2]].astype(np.int64)
    stats = identity_stats(embeddings, labels)
    assert reliability(stats)[0] == 1 / SIMILARITY_SCALE and reliability(stats)[2] == 1.0
    assert 0.9 < reliability(stats)[1] < 1.0
    assert np.linalg.norm(similarity_rows(stats), axis=1).max() <= SIMILARITY_SCALE + 1e-6
