import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_format_fixtures import make_image_folder
from facetrain.cli import main
from facetrain.data.formats.image_folder import ImageFolder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_sets(tmp_path):
    make_image_folder(tmp_path / "refs", {"alice": 1, "bob": 1})
    make_image_folder(tmp_path / "vars", {"alice": 2, "carol": 3})
    return tmp_path / "refs", tmp_path / "vars" / "imgs"


def test_merge_same_named_identities_with_absolute_links(tmp_path, two_sets, capsys):
    out = tmp_path / "all" / "imgs"
    assert main(["compound", "--list_datasets", *map(str, two_sets), "--final_path", str(out), "--quiet"]) == 0
    assert "result:      3 identities          7 images" in capsys.readouterr().out
    folder = ImageFolder(out)
    assert folder.classes == ["alice", "bob", "carol"] and len(folder) == 7
    assert sorted(p.name for p in (out / "alice").iterdir()) == ["d1_0.jpg", "d2_0.jpg", "d2_1.jpg"]
    link = out / "alice" / "d2_1.jpg"
    assert link.is_symlink() and os.path.isabs(os.readlink(link))
    report = json.loads((tmp_path / "all" / "compound_report.json").read_text())
    assert [i["images"] for i in report["inputs"]] == [2, 5]
    assert report["result"] == {"path": str(out.resolve()), "identities": 3, "images": 7,
                                "identities_in_several_inputs": 1}


def test_keep_apart_and_copy_via_seed_script(tmp_path, two_sets):
    out = tmp_path / "sep"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compound_multiple_datasets.py"),
                           "--list_datasets", *map(str, two_sets), "--final_path", str(out), "--copy",
                           "--keep_apart", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    folder = ImageFolder(out)  # not named imgs: written to out/imgs
    assert folder.classes == ["d1_alice", "d1_bob", "d2_alice", "d2_carol"] and len(folder) == 7
    assert not (out / "imgs" / "d2_carol" / "d2_0.jpg").is_symlink()


def test_existing_output_and_bad_input_are_errors(tmp_path, two_sets, capsys):
    out = tmp_path / "o" / "imgs"
    (out / "x").mkdir(parents=True)
    assert main(["compound", "--list_datasets", *map(str, two_sets), "--final_path", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["compound", "--list_datasets", str(tmp_path / "missing"), "--final_path", str(tmp_path / "n")]) == 1
    assert "missing: image folder not found" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
