"""Crash consistency of `facetrain train`: killed with SIGKILL at seeded random write
events (inside checkpoint files, and just before outputs are committed), then recovered as a user
would (resume from last.ckpt when there is one, else start again with --overwrite):
- after every kill, each output that looks complete is complete, and last.ckpt never records a
  best checkpoint (or an epoch copy) that is not there yet;
- the recovered run ends with the outputs of an uninterrupted run (weights, positions, best choice,
  logged rows, results), with no temporaries left behind."""
from __future__ import annotations

import random

import pytest

from crash_tools import CommandServer
from train_checks import assert_same_outputs, check_after_kill
from train_fixtures import make_dataset, train_args

# 3 batches, a validation after every one (AdaFace's 0.1 of an epoch for <= 4 epochs, at least one
# batch), a checkpoint after every step, epoch=00.ckpt too. One epoch keeps the 41 runs within ~70 s of
# CPU; resuming across an epoch's end is tests/test_train_loop.py's.
FLAGS = ["--epochs", "1", "--limit_train_batches", "3", "--batch_size", "4", "--save_every_steps", "1",
         "--precision", "fp32", "--save_all_models", "--crop_augmentation_prob", "0.5"]
KILLS_AT_COMMITS, KILLS_ANYWHERE = 10, 10


def _kill_points(total: int, commits: list[tuple[int, str]], seed: int = 10) -> list[int]:
    """Seeded: kills just before commits (between two outputs) and at any event (mostly inside files)."""
    rng = random.Random(seed)
    at_commits = rng.sample([n for n, _ in commits], min(KILLS_AT_COMMITS, len(commits)))
    anywhere = rng.sample(sorted(set(range(1, total + 1)) - set(at_commits)), KILLS_ANYWHERE)
    return sorted(at_commits + anywhere)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_killed_anywhere_recovers_to_the_uninterrupted_outputs(tmp_path):
    data = make_dataset(tmp_path / "data", classes=6, per_class=4)
    with CommandServer(tmp_path) as server:
        reference = tmp_path / "reference"
        total, commits = server.trace(["train", *train_args(data, reference, *FLAGS)])
        assert any(path.endswith("best.ckpt") for _, path in commits)
        kills = _kill_points(total, commits)
        assert len(kills) >= 20
        interrupted = set()  # the outputs being written when killed
        for n in kills:
            run = tmp_path / f"killed-at-{n}"
            outcome = server.run(["train", *train_args(data, run, *FLAGS)], kill_at=n)
            assert outcome.killed, f"event {n} of {total}: {outcome.log[-2000:]}"
            interrupted |= {p.name.split(".tmp-")[0] for p in run.iterdir() if ".tmp-" in p.name}
            check_after_kill(run)
            recover = ["--resume_from_checkpoint", str(run / "last.ckpt")] if (run / "last.ckpt").exists() \
                else ["--overwrite"]
            outcome = server.run(["train", *train_args(data, run, *FLAGS, *recover)])
            assert outcome.returncode == 0, f"recovering from a kill at event {n}: {outcome.log[-3000:]}"
            assert_same_outputs(run, reference)
    assert {"best.ckpt", "last.ckpt"} <= interrupted and len(interrupted) >= 4, interrupted  # several outputs hit
