"""`--overwrite` on a folder holding a previous Partial FC run: its shard folders go with its checkpoints."""
from __future__ import annotations

from facetrain.train.run_folder import clear_run_files


def test_overwrite_deletes_the_shard_folders_of_the_runs_checkpoints_and_nothing_else(tmp_path):
    for name in ("results.json", "last.ckpt", "best.ckpt", "epoch=03.ckpt", "notes.txt"):
        (tmp_path / name).write_text(name)
    for folder in ("last.ckpt.pfc", "best.ckpt.pfc", "epoch=03.ckpt.pfc", "mine.pfc", "last.ckpt.pfc.keep"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rank0of2-step7.pt").write_bytes(b"shard")
    deleted = clear_run_files(tmp_path)
    # what says "finished" first, checkpoints before the shards they name
    assert deleted == ["results.json", "best.ckpt", "last.ckpt", "epoch=03.ckpt", "best.ckpt.pfc",
                       "epoch=03.ckpt.pfc", "last.ckpt.pfc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt.pfc.keep", "mine.pfc", "notes.txt"]
