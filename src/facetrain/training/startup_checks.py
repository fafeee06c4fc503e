"""What rank 0 checks when a run starts, without touching anything the run computes.

Alignment: the landmarks of a small seeded sample of the training set and of each validation set are
detected (`hygiene.alignment_check`, MTCNN on CPU) and compared with the ArcFace 112x112 template and
with each other. A set gets one warning line when it is clearly elsewhere: its mean landmarks offset
by more than `CLEAR_OFFSET_PX` or scaled by more than `CLEAR_SCALE` from the template, or "not aligned";
a validation set also when it is that far from a training set that is not itself off the template.
These tolerances are twice `facetrain check`'s, whose 2 px / 5 % verdict a sample of a dozen faces can
cross by detector noise alone (synthetic faces measured 1-2 px off); a wrong template (a 96x112 crop
padded to 112 sits 8 px off) or loose crops are well beyond them. A set where fewer than
`MIN_FACES` faces were found gets no verdict (one notice), never a guess.

Cost: at most `SAMPLE` images per set, detected in chunks until `ENOUGH_FACES` are found; a set with no
face in its first `GIVE_UP_AFTER` images is given up. About 0.1 s per image on a CPU core. The detector
is built and run inside `torch.random.fork_rng` and the sample is drawn from its own generator, so the
run's random streams (and so its results and exact resume) are the same with or without the check.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from facetrain.data.formats.verification_set import VerificationSet
from facetrain.training.config import TrainConfig
from facetrain.training.logger import log, warn

SAMPLE, ENOUGH_FACES, MIN_FACES, GIVE_UP_AFTER, CHUNK = 40, 12, 8, 16, 8
CLEAR_OFFSET_PX, CLEAR_SCALE = 4.0, 0.10
ARCFACE = "aligned to the ArcFace 112x112 template"


def sample_alignment(read: Callable[[int], np.ndarray], count: int, detector, seed: int = 0) -> dict:
    """`alignment_check.alignment_verdict` of up to SAMPLE images (seeded order), with early stops (module doc)."""
    from facetrain.hygiene.alignment_check import alignment_verdict, detect_landmarks

    order = np.random.default_rng(seed).choice(count, size=min(SAMPLE, count), replace=False)
    found, missed = [], 0
    for start in range(0, len(order), CHUNK):
        landmarks, m = detect_landmarks(np.stack([read(int(i)) for i in order[start:start + CHUNK]]), detector)
        found.append(landmarks)
        missed += m
        faces = sum(len(f) for f in found)
        if faces >= ENOUGH_FACES or (faces == 0 and start + CHUNK >= GIVE_UP_AFTER):
            break
    return alignment_verdict(np.concatenate(found) if found else np.zeros((0, 5, 2)), missed)


def _clearly_off_template(result: dict) -> bool:
    if result["verdict"] == ARCFACE:
        return False
    return (result["verdict"].startswith("not aligned") or max(map(abs, result["offset_px"])) > CLEAR_OFFSET_PX
            or abs(result["scale"] - 1.0) > CLEAR_SCALE)


def _clearly_apart(a: dict, b: dict) -> bool:
    shift = max(abs(x - y) for x, y in zip(a["offset_px"], b["offset_px"]))
    return shift > CLEAR_OFFSET_PX or abs(a["scale"] / b["scale"] - 1.0) > CLEAR_SCALE


def _facts(result: dict) -> str:
    return f"{result['found']} faces found in {result['sample']} sampled images"


def alignment_lines(results: Mapping[str, dict], training: str) -> tuple[list[str], list[str]]:
    """(warnings, notices) for the per-set results (`training` names the training set's entry). A set warns
    when it is clearly off the template; a validation set also when it is clearly apart from a training
    set that is not (a training set off the template has said so already)."""
    warnings, notices = [], []
    reference = results.get(training)
    if reference is not None and (reference["found"] < MIN_FACES or _clearly_off_template(reference)):
        reference = None
    for name, result in results.items():
        if result["found"] < MIN_FACES:
            notices.append(f"alignment check: {name}: only {_facts(result)}, too few to tell how the faces are "
                           "aligned; no verdict")
            continue
        off = _clearly_off_template(result)
        apart = name != training and reference is not None and _clearly_apart(result, reference)
        if not (off or apart):
            continue
        line = f"alignment check: {name}: {result['verdict']} ({_facts(result)})"
        if name == training:
            line += "; the validation sets, the released models and `facetrain align` use the ArcFace template"
        elif apart:
            line += f"; the training data is placed otherwise ({reference['verdict']})"
        warnings.append(line)
    return warnings, notices


def startup_checks(config: TrainConfig, source, val_sets: Mapping[str, VerificationSet]) -> None:
    """Rank 0 at start-up: the alignment check (unless --no_alignment_check) and a readable --audit file
    (warned about, not refused: the audit documents the run and changes nothing it computes)."""
    if config.audit:
        from facetrain.errors import DataError
        from facetrain.training.model_card import read_audit

        try:
            read_audit(config.audit)
        except DataError as exc:
            warn(f"--audit: {exc}; MODEL_CARD.md will say so")
    if config.alignment_check:
        check_alignment_at_start(source, val_sets)


def check_alignment_at_start(source, val_sets: Mapping[str, VerificationSet]) -> None:
    """Warn (one line per set) about sets aligned otherwise (module doc)."""
    from facetrain.alignment.mtcnn import MTCNN

    training = f"training data ({source.describe().split(': ')[0]})"
    with torch.random.fork_rng(devices=[]):  # the detector's layer initialisation draws from torch's stream
        detector = MTCNN(device="cpu")
        results = {training: sample_alignment(source.read, len(source), detector)}
        for name, vset in val_sets.items():
            results[f"validation set {name}"] = sample_alignment(lambda i, v=vset: np.asarray(v.images[i]),
                                                                 len(vset.images), detector)
    warnings, notices = alignment_lines(results, training)
    for line in notices:
        log.info(line)
    for line in warnings:
        warn(line)
