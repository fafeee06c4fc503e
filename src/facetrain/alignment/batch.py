"""Align a folder of raw photos, `IN_DIR/<identity>/<image>`, into a training folder
`OUT_DIR/imgs/<identity>/<stem>.jpg` (112x112), in parallel worker processes.

Each worker owns its MTCNN and runs torch with one thread: N single-threaded detectors use
N cores better than one detector fighting over them. Images where no face is found, or that
cannot be read (corrupt, over the pixel limit), are skipped and listed in
`OUT_DIR/align_report.json` (and returned); the batch goes on. Faces already written (and newer
than their photo) are kept, so running the command again resumes an interrupted run. An output
folder inside the input (or the input inside the output's `imgs`) is refused: the next run
would align the aligned faces again.

With `landmarks` (see `facetrain.alignment.landmarks`) the listed points are warped with the detector
style's template and fit, and nothing is detected: images without landmarks are skipped and listed
in the report as `no_landmarks`.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facetrain.alignment.aligner import FaceAligner, NoFaceError
from facetrain.alignment.landmarks import landmarks_for
from facetrain.data.formats.image_codec import encode_image
from facetrain.data.formats.image_folder import IMGS, list_identities, resolve_imgs_dir
from facetrain.data.guards.photo import read_photo_rgb
from facetrain.data.guards.pixel_limit import set_max_pixels
from facetrain.errors import DataError
from facetrain.geometry.similarity import WARPS
from facetrain.io_utils import atomic_path, atomic_write_json, ignore_interrupts, open_write

REPORT_NAME = "align_report.json"


@dataclass
class AlignReport:
    input_dir: str
    output_dir: str
    identities: int = 0
    images: int = 0
    aligned: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    no_landmarks: list[str] = field(default_factory=list)

    def summary(self) -> str:
        skipped = f", no landmarks: {len(self.no_landmarks)}" if self.no_landmarks else ""
        return (f"aligned {self.aligned}/{self.images} images of {self.identities} identities into "
                f"{self.output_dir}; no face: {len(self.no_face)}, unreadable: {len(self.unreadable)}{skipped}")


def plan_jobs(in_dir: Path, out_imgs: Path) -> list[tuple[str, str]]:
    """(source, destination) pairs. Two sources with the same stem (a.png, a.jpg) keep their
    full names (a.png.jpg) so that neither overwrites the other."""
    jobs = []
    for identity, names in list_identities(in_dir).items():
        stems = [os.path.splitext(n)[0] for n in names]
        for name, stem in zip(names, stems):
            target = f"{name}.jpg" if stems.count(stem) > 1 else f"{stem}.jpg"
            jobs.append((str(in_dir / identity / name), str(out_imgs / identity / target)))
    return jobs


_worker_aligner: FaceAligner | None = None
_worker_style = "adaface"


def _start_method(device: str) -> str:
    """fork starts CPU workers in milliseconds (they run torch single-threaded, so no OpenMP pool
    is inherited in use); CUDA cannot survive a fork, so GPU workers are spawned."""
    if torch.device(device).type == "cpu" and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _init_worker(device: str, select: str, detector: str, factor: float | None, threads: int | None,
                 detect: bool = True) -> None:
    """`detect=False` (landmarks given): no MTCNN is loaded, only the detector style's warp is used."""
    global _worker_aligner, _worker_style
    if threads is not None:
        torch.set_num_threads(threads)
    _worker_style = detector
    _worker_aligner = FaceAligner(device=device, select=select, detector=detector, factor=factor) if detect else None


def _init_pool_worker(device: str, select: str, detector: str, factor: float | None, detect: bool) -> None:
    ignore_interrupts()
    _init_worker(device, select, detector, factor, threads=1, detect=detect)


def _align_one(job: tuple[str, str, np.ndarray | None]) -> tuple[str, str, str]:
    """(source, status, message) with status "ok", "no_face" or "unreadable"; writes the face atomically.
    A job with landmarks is warped with them; one without is detected."""
    source, target, points = job
    try:
        rgb = read_photo_rgb(source)
        face_rgb = _worker_aligner.align(rgb, source) if points is None else WARPS[_worker_style](rgb, points, 112)
    except NoFaceError as exc:
        return source, "no_face", str(exc)
    except DataError as exc:
        return source, "unreadable", str(exc)
    except (MemoryError, cv2.error) as exc:  # a photo the detector cannot process must not stop the batch
        return source, "unreadable", f"{source}: cannot process image ({type(exc).__name__}: {exc})"
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, open_write(tmp) as f:
        f.write(encode_image(cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR), ".jpg", quality=95))
    return source, "ok", ""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_separate(source_dir: Path, out_dir: Path) -> None:
    """Refuse outputs inside the input (the next run would align the aligned faces) and the reverse."""
    source, out = source_dir.resolve(), out_dir.resolve()
    if _inside(out, source):
        raise DataError(f"{out_dir}: the output folder is inside the input folder {source_dir}; "
                        "choose an output folder outside it")
    if _inside(source, out / IMGS):
        raise DataError(f"{source_dir}: the input folder is inside the output folder {out_dir / IMGS}; "
                        "choose an output folder elsewhere")


def _done(job: tuple[str, str, np.ndarray | None]) -> bool:
    """The face exists (written atomically, so complete) and is newer than its photo."""
    source, target, _ = job
    try:
        return os.stat(target).st_mtime_ns >= os.stat(source).st_mtime_ns
    except FileNotFoundError:
        return False


def align_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 1,
    select: str = "score",
    device: str = "cpu",
    factor: float | None = None,
    progress: bool | None = None,
    detector: str = "adaface",
    max_pixels: int | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
) -> AlignReport:
    """Align every image under `in_dir` (or `in_dir/imgs`) into `out_dir/imgs`; write and return the report.

    `max_pixels` raises the pixel limit (see facetrain.data.guards.pixel_limit) for this process and its workers.
    `landmarks` ({path relative to the input folder, or absolute: (5, 2) points}, `read_landmarks`):
    warp those instead of detecting; images not listed are skipped (`no_landmarks`)."""
    set_max_pixels(max_pixels)
    source_dir = resolve_imgs_dir(in_dir, require_imgs=False)
    out_dir = Path(out_dir)
    check_separate(source_dir, out_dir)
    jobs = plan_jobs(source_dir, out_dir / IMGS)
    if not jobs:
        raise DataError(f"{in_dir}: no images found (expected {in_dir}/<identity>/<image>)")
    report = AlignReport(str(source_dir), str(out_dir / IMGS), identities=len({Path(s).parent for s, _ in jobs}),
                         images=len(jobs))
    if landmarks is None:
        jobs = [(source, target, None) for source, target in jobs]
    else:
        with_points = [(s, t, landmarks_for(landmarks, Path(s), source_dir)) for s, t in jobs]
        report.no_landmarks = sorted(s for s, _, points in with_points if points is None)
        jobs = [job for job in with_points if job[2] is not None]
        if not jobs:
            raise DataError(f"{in_dir}: none of its {report.images} images is listed in the landmark file "
                            f"(paths are relative to {source_dir}, e.g. identity/image.jpg, or absolute)")
    todo = [job for job in jobs if not _done(job)]
    report.aligned = len(jobs) - len(todo)
    bar = tqdm(total=len(jobs), initial=report.aligned, desc="align", unit="img",
               disable=None if progress is None else not progress)
    detect = landmarks is None
    if todo and workers <= 1:
        _init_worker(device, select, detector, factor, threads=None, detect=detect)
        _collect(map(_align_one, todo), report, bar)
    elif todo:
        context = multiprocessing.get_context(_start_method(device))
        with context.Pool(workers, initializer=_init_pool_worker,
                          initargs=(device, select, detector, factor, detect)) as pool:
            _collect(pool.imap_unordered(_align_one, todo, chunksize=4), report, bar)
    bar.close()
    report.no_face.sort()
    report.unreadable.sort(key=lambda item: item["path"])
    atomic_write_json(out_dir / REPORT_NAME, asdict(report))
    return report


def _collect(results, report: AlignReport, bar: tqdm) -> None:
    for source, status, message in results:
        if status == "ok":
            report.aligned += 1
        elif status == "no_face":
            report.no_face.append(source)
        else:
            report.unreadable.append({"path": source, "error": message})
        bar.update(1)
