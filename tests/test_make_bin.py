"""`facetrain make-bin`: seeded balanced pairs from an image folder, excluded identities never used,
original bytes kept, a pairs file honoured; the result is a .bin that `read_bin` and `eval` accept."""
import pickle

import cv2
import numpy as np
import pytest

from facetrain.cli import main
from facetrain.data.formats.bin import read_bin
from facetrain.data.tools.make_bin import sample_pairs
from facetrain.synthetic.generate import generate_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, num_identities=8, images_per_identity=4, seed=3)
    return out


def _file_of(folder):
    return {p.read_bytes(): p for p in (folder / "imgs").glob("*/*")}


def test_random_pairs_are_balanced_seeded_and_avoid_excluded_identities(folder, tmp_path, capsys):
    (tmp_path / "train_ids.txt").write_text("id_00000\nid_00001\n")
    args = ["make-bin", str(folder), "--pairs", "40", "--seed", "5", "--exclude", str(tmp_path / "train_ids.txt"),
            "id_00002"]
    assert main([*args, "--out", str(tmp_path / "a.bin")]) == 0
    assert "40 pairs (20 genuine)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b.bin")]) == 0
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    encoded, issame = pickle.loads((tmp_path / "a.bin").read_bytes())
    assert issame == [k % 2 == 0 for k in range(40)] and all(type(s) is bool for s in issame)
    files = _file_of(folder)
    paths = [files[bytes(b)] for b in encoded]  # every image is a file of the folder, byte for byte
    ids = [p.parent.name for p in paths]
    assert not {"id_00000", "id_00001", "id_00002"} & set(ids)
    for k, same in enumerate(issame):
        assert (ids[2 * k] == ids[2 * k + 1]) == same and paths[2 * k] != paths[2 * k + 1]
    assert len({tuple(sorted(map(str, paths[2 * k:2 * k + 2]))) for k in range(40)}) == 40
    assert read_bin(tmp_path / "a.bin").images.shape == (80, 112, 112, 3)


PAIRS = ["id_00003/0.jpg id_00003/1.jpg 1", "id_00003/0.jpg id_00004/2.jpg 0"] + \
    [f"id_00005/{k % 4}.jpg id_0000{5 if k % 2 == 0 else 6}/{(k + 1) % 4}.jpg {1 - k % 2}" for k in range(8)]


def _pairs_text(lines=PAIRS):
    return "# comment\n" + "\n".join(lines) + "\n"


def test_pairs_file_and_bad_inputs(folder, tmp_path, capsys):
    (tmp_path / "pairs.txt").write_text(_pairs_text())
    assert main(["make-bin", str(folder / "imgs"), "--pairs_file", str(tmp_path / "pairs.txt"),
                 "--out", str(tmp_path / "p.bin")]) == 0
    vset = read_bin(tmp_path / "p.bin")
    assert vset.issame.tolist() == [True, False] + [k % 2 == 0 for k in range(8)]
    assert np.array_equal(vset.images[0], cv2.imread(str(folder / "imgs" / "id_00003" / "0.jpg")))
    cases = [("bad.txt", "a b maybe\n", "line 1: expected `path_a path_b 1|0`"),
             ("gone.txt", _pairs_text(PAIRS[:-1] + ["id_00003/0.jpg id_00003/99.jpg 1"]), "99.jpg: image not found")]
    for name, text, message in cases:
        (tmp_path / name).write_text(text)
        assert main(["make-bin", str(folder), "--pairs_file", str(tmp_path / name), "--out", str(tmp_path / "x.bin")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and err.count("\n") == 1
    big = tmp_path / "big" / "imgs" / "a"
    big.mkdir(parents=True)
    for k in range(4):
        cv2.imwrite(str(big / f"{k}.png"), np.zeros((120, 100, 3), np.uint8))
    (tmp_path / "big" / "imgs" / "b").mkdir()
    for k in range(2):
        cv2.imwrite(str(tmp_path / "big" / "imgs" / "b" / f"{k}.png"), np.zeros((120, 100, 3), np.uint8))
    assert main(["make-bin", str(tmp_path / "big"), "--pairs", "10", "--out", str(tmp_path / "x.bin")]) == 1
    assert "100x120 image; a verification set holds aligned 112x112 faces" in capsys.readouterr().err
    assert not (tmp_path / "x.bin").exists()
    assert main(["make-bin", str(folder), "--pairs", "400", "--out", str(tmp_path / "x.bin")]) == 1
    assert "400 pairs need 200 genuine pairs, the data has 48" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--pairs", "7"], "--pairs must be >= 10 (the 10-fold protocol), got 7"),
    (["--out", "{T}/train.bin"], "'train' cannot name a verification set"),
    (["--out", "{T}/.bin"], "'' cannot name a verification set"),
    (["--out", "{T}/lfw.txt"], "lfw.txt: a verification set is written as a .bin file"),
    (["--exclude", "trian_ids.txt"], "--exclude trian_ids.txt: no such file"),
    (["--exclude", "{T}/lists/train"], "no such file"),
    (["--pairs_file", "{T}/few.txt"], "few.txt: 9 pairs; the 10-fold protocol needs at least 10"),
    (["--pairs_file", "{T}/genuine.txt"], "genuine.txt: 10 pairs, 10 genuine and 0 impostor"),
    (["--pairs_file", "{T}/latin1.txt"], "latin1.txt: not UTF-8 text (byte 2); save it as UTF-8"),
])
def test_make_bin_refuses_what_eval_would_refuse(folder, tmp_path, capsys, args, fragment):
    (tmp_path / "few.txt").write_text(_pairs_text(PAIRS[:-1]))
    (tmp_path / "genuine.txt").write_text(_pairs_text([line[:-1] + "1" for line in PAIRS]))
    (tmp_path / "latin1.txt").write_bytes(b"# \xe9t\xe9\n" + _pairs_text().encode())
    argv = ["make-bin", str(folder), "--out", str(tmp_path / "v.bin"), *[a.replace("{T}", str(tmp_path)) for a in args]]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not list(tmp_path.glob("*.bin"))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_a_pairs_file_with_a_byte_order_mark_is_read_in_its_encoding(folder, tmp_path, encoding):
    (tmp_path / "pairs.txt").write_bytes(_pairs_text().encode(encoding))
    assert main(["make-bin", str(folder), "--pairs_file", str(tmp_path / "pairs.txt"), "--out", str(tmp_path / "p.bin")]) == 0
    assert read_bin(tmp_path / "p.bin").issame.tolist() == [True, False] + [k % 2 == 0 for k in range(8)]


def test_sample_pairs_by_hand():
    pairs, issame = sample_pairs(np.array([0, 0, 1, 2]), 2, seed=0)
    assert issame.tolist() == [True, False]
    assert sorted(pairs[0].tolist()) == [0, 1]  # the only genuine pair there is
    assert len({0, 1} & set(pairs[1].tolist())) <= 1
