"""Two datasets side by side in one scorecard, with the session's TinyNet: its own training set (clean) and a copy
with planted mislabels (images moved to another identity's folder).

What an audit must not do, on the clean set: report leakage of the held-out benchmark (lfw.bin, identities
disjoint from training by construction): every reference consistent with chance. What it must do on the noisy
one: find >= 90 % of the moved images, while flagging <= 1 % of the clean images of either set, and score worse
on the scorecard's consistency and mislabel columns.
"""
from __future__ import annotations

import json
import shutil

import pytest

from facetrain.cli import main

IDENTITIES = 100  # of the model's 200 training identities (16 images each), for speed
MOVED = 40  # images moved, one from each of the first 40 identities to the next identity's folder
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def scorecard(trained_tinynet, tmp_path_factory):
    root = tmp_path_factory.mktemp("scorecard")
    clean, noisy = root / "clean" / "imgs", root / "noisy" / "imgs"
    identities = sorted(p.name for p in (trained_tinynet.data / "imgs").iterdir())[:IDENTITIES]
    for identity in identities:
        shutil.copytree(trained_tinynet.data / "imgs" / identity, clean / identity)
        shutil.copytree(trained_tinynet.data / "imgs" / identity, noisy / identity)
    moved = {}
    for k in range(MOVED):
        src = noisy / identities[k] / "0.jpg"
        dst = noisy / identities[k + 1] / f"moved_from_{identities[k]}.jpg"
        src.rename(dst)
        moved[str(dst)] = identities[k]
    out = root / "out"
    assert main(["audit", str(clean), str(noisy), "--ckpt", str(trained_tinynet.checkpoint), "--out", str(out),
                 "--reference", str(trained_tinynet.data / "lfw.bin"), "--no_progress"]) == 0
    reports = {name: json.loads((out / name / "audit.json").read_text()) for name in ("clean", "noisy")}
    return {"out": out, "moved": moved, "reports": reports,
            "card": json.loads((out / "scorecard.json").read_text())}


def test_clean_data_against_its_held_out_benchmark_is_consistent_with_chance(scorecard):
    for report in scorecard["reports"].values():
        leak = report["leakage"]["lfw"]
        assert leak["threshold"]["source"] == "non-matching pairs of lfw" and leak["threshold"]["impostor_pairs"] >= 100
        assert not leak["leak"] and leak["verdict"].startswith("consistent with chance"), leak["verdict"]
        assert report["summary"]["leaked_images"] == 0 and report["summary"]["leaking_references"] == []
    assert not scorecard["reports"]["clean"]["collisions"]["chance"]["significant"]


def test_planted_mislabels_are_found_and_few_clean_images_flagged(scorecard):
    noisy = scorecard["reports"]["noisy"]["intra_class"]
    flagged = {m["image"]: m for m in noisy["suspected_mislabels"]}
    found = [path for path in scorecard["moved"] if path in flagged]
    assert len(found) >= 0.9 * MOVED, (len(found), noisy["suspected_mislabels"][:5])
    # (their nearest identity is mostly, not always, the one they came from: an atypical photo may sit nearer a third)
    false = [m for m in noisy["suspected_mislabels"] if m["image"] not in scorecard["moved"]]
    assert len(false) <= 0.01 * (noisy["judged_images"] - MOVED), false[:5]
    clean = scorecard["reports"]["clean"]["intra_class"]
    assert len(clean["suspected_mislabels"]) <= 0.01 * clean["judged_images"], clean["suspected_mislabels"][:5]


def test_the_scorecard_puts_the_noisy_set_behind_on_its_columns(scorecard):
    rows = {r["dataset"]: r for r in scorecard["card"]["datasets"]}
    clean, noisy = rows["clean"], rows["noisy"]
    assert clean["images"] == noisy["images"] == 16 * IDENTITIES and clean["identities"] == noisy["identities"] == IDENTITIES
    assert noisy["mislabel_share"] > clean["mislabel_share"]
    assert noisy["consistency"] < clean["consistency"]
    assert noisy["diversity_degrees"] > clean["diversity_degrees"]
    for row in (clean, noisy):
        assert 0 < row["feature_norm"]["p05"] <= row["feature_norm"]["median"] <= row["feature_norm"]["p95"]
        assert row["leakage"]["lfw"].startswith("consistent with chance")
    page = (scorecard["out"] / "scorecard.html").read_text()
    assert "uniqueness" in page and "suspected mislabels" in page and page.count("<tr") >= 3
