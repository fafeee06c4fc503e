"""Crash consistency of the data commands: kill a command with SIGKILL at seeded write events, then check.

For each kill point N (seeded, within the event count of an uninterrupted run, see facetrain.io_utils),
run through a `crash_tools.CommandServer` (one process with the imports done, a forked child per run):
1. the child runs the command killed at write event N and must die of SIGKILL;
2. every output file that exists is identical to the uninterrupted run's (outputs are
   deterministic and atomic, so anything else is a half-written or mismatched file), and the
   command's own readers accept what looks complete;
3. running the command again succeeds and leaves exactly the uninterrupted run's outputs, with
   no `*.tmp-<pid>` / `*.old-<pid>` left anywhere.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from crash_tools import CommandServer

LEFTOVER_MARKS = (".tmp-", ".old-")
# imported once by the server, not by every forked run (MTCNN and torch's data modules: ~1 s)
PRELOAD = {"align": ("facetrain.alignment.batch",), "convert_memfiles": ("facetrain.data.tools.dcface",),
           "convert_images": ("facetrain.data.tools.dcface",)}


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content digest (a symlink by its target; folders are implied by their files)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if any(m in p.name for m in LEFTOVER_MARKS))


# --- commands: inputs, argv, and the readers of what looks complete ---

def _photo(size: int, angle: float) -> np.ndarray:
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    matrix = cv2.getRotationMatrix2D((size * 0.45, size * 0.24), angle, 1.0)
    return cv2.warpAffine(rgb, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)


def prepare(command: str, work: Path) -> tuple[list[str], Path]:
    """(argv, output root) for one command; inputs are written under `work/in`."""
    from facetrain.synthetic.generate import generate_dataset
    from facetrain.synthetic.profiles import BENCHMARK_NAMES

    inputs, out = work / "in", work / "out"
    if command == "synth":
        return ["synth", "--out", str(out), "--identities", "3", "--images_per_identity", "3", "--rec", "--bins",
                "--bin_names", "lfw", "cfp_fp", "--pairs_per_set", "10"], out
    if command == "convert_memfiles":
        generate_dataset(inputs, 2, 2, seed=1, folder=False, bins=True, bin_names=BENCHMARK_NAMES,
                         pairs_per_set=10, progress=False)
        return ["convert", "-r", str(inputs), "--make_validation_memfiles", "--out", str(out), "--quiet"], out
    if command == "convert_images":
        generate_dataset(inputs, 3, 3, seed=2, folder=False, rec=True, bins=True, bin_names=("lfw",),
                         pairs_per_set=10, progress=False)
        return ["convert", "-r", str(inputs), "--make_image_files", "--out", str(out), "--quiet"], out
    if command == "compound":
        generate_dataset(inputs / "a", 4, 3, seed=3, progress=False)
        generate_dataset(inputs / "b", 3, 3, seed=4, progress=False)
        return ["compound", "--list_datasets", str(inputs / "a"), str(inputs / "b"), "--final_path",
                str(out / "imgs"), "--copy", "--quiet"], out
    if command == "align":
        from PIL import Image

        for k, angle in enumerate(range(-12, 15, 3)):  # 9 photos: 2 write events each, 2 for the report
            identity = ("alice", "bob", "carol")[k % 3]
            (inputs / identity).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(112, angle)).save(inputs / identity / f"{k}.png")
        (inputs / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff not an image")
        return ["align", str(inputs), str(out), "--no_progress"], out
    raise SystemExit(f"unknown command {command}")


def check_readable(command: str, out: Path) -> None:
    """The command's own readers accept every output that looks complete (raise on anything else)."""
    from facetrain.data.formats.image_folder import ImageFolder
    from facetrain.data.formats.memfile import load_validation_sets
    from facetrain.data.formats.recordio import RecordReader

    if command == "synth" and (out / "train.rec").is_file():
        reader = RecordReader(out)
        reader.labels
        reader.read_image(int(reader.image_keys[-1]))
    if command.startswith("convert") and any(out.glob("*.dat.conf")):
        names = sorted(p.name[: -len(".dat.conf")] for p in out.glob("*.dat.conf")
                       if (out / f"{p.name[:-len('.dat.conf')]}_list.npy").is_file())
        load_validation_sets(out, names)
    # align fills imgs/ face by face (that is how it resumes): complete once its report is written
    complete = (out / "align_report.json").is_file() if command == "align" else (out / "imgs").is_dir()
    if complete:
        folder = ImageFolder(out / "imgs")
        for i in range(len(folder)):
            folder.read(i)


def trial(server: CommandServer, command: str, argv: list[str], out: Path, crash_at: int,
          reference: dict[str, str]) -> list[str]:
    """Problems found for one kill point (empty when every invariant holds)."""
    shutil.rmtree(out, ignore_errors=True)
    problems = []
    outcome = server.run(argv, kill_at=crash_at)
    if not outcome.killed:
        return [f"N={crash_at}: expected SIGKILL, exit code {outcome.returncode}: {outcome.log[-500:]}"]
    killed = snapshot(out) if out.exists() else {}
    for rel, digest in killed.items():
        if any(m in rel for m in LEFTOVER_MARKS):
            continue
        if reference.get(rel) != digest:
            problems.append(f"N={crash_at}: {rel} exists but differs from the uninterrupted run's")
    try:
        if out.exists():
            check_readable(command, out)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the test lists every failure
        problems.append(f"N={crash_at}: an output that looks complete is unreadable: {type(exc).__name__}: {exc}")
    outcome = server.run(argv)
    if outcome.returncode != 0:
        return problems + [f"N={crash_at}: the re-run exited with {outcome.returncode}: {outcome.log[-500:]}"]
    again = snapshot(out)
    if again != reference:
        diff = sorted(set(again.items()) ^ set(reference.items()))[:4]
        problems.append(f"N={crash_at}: the re-run's outputs differ from an uninterrupted run: {diff}")
    if leftovers(out):
        problems.append(f"N={crash_at}: temporaries survive the re-run: {leftovers(out)}")
    return problems


def harness(command: str, work: Path, seed: int, kills: int) -> dict:
    """Kill `command` at `kills` seeded write events; {"events", "kills", "files", "problems"}."""
    argv, out = prepare(command, work)
    scratch = work / "logs"
    scratch.mkdir()
    with CommandServer(scratch, preload=PRELOAD.get(command, ())) as server:
        events, _ = server.trace(argv)
        reference = snapshot(out)
        rng = np.random.default_rng(seed)
        points = sorted(rng.choice(np.arange(1, events + 1), size=min(kills, events), replace=False).tolist())
        problems = [p for n in points for p in trial(server, command, argv, out, n, reference)]
    return {"events": events, "kills": points, "files": len(reference), "problems": problems}
