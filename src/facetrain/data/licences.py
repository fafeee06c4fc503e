"""The terms of use of face datasets people train on, as their publishers state them, for the model card.

A dataset is recognised by a name in its path (case-insensitive: `faces_emore`, `webface4m`, `DigiFace`,
...). Every entry quotes its source; a dataset not listed, or listed without a statement found at its
source, is "unknown": the card never guesses terms. InsightFace's statement covers the packs it
distributes (`faces_emore` = MS1MV2, `ms1m-retinaface-t1` = MS1MV3, `faces_webface_112x112` =
CASIA-WebFace, `faces_vgg_112x112` = VGGFace2) and the models trained on them; the original releases of
those datasets have their own terms, not recorded here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"
INSIGHTFACE_TERMS = ("non-commercial research purposes only (InsightFace: \"the training data containing the annotation "
                     "(and the models trained with these data) are available for non-commercial research purposes only\")")
INSIGHTFACE_SOURCE = "https://github.com/deepinsight/insightface (README, License)"


@dataclass(frozen=True)
class DatasetTerms:
    name: str
    terms: str
    source: str


WEBFACE = ("academic research only; no commercial use; no redistribution without permission; access after signing "
           "the WebFace260M agreement (covers the dataset and its subsets)", "https://www.face-benchmark.org/download.html")
# (lower-case name as it appears in paths, the dataset it means); longer names first, so a pack's name wins
KNOWN: tuple[tuple[str, DatasetTerms], ...] = (
    ("ms1m-retinaface-t1", DatasetTerms("MS1MV3 (InsightFace's ms1m-retinaface-t1)", INSIGHTFACE_TERMS, INSIGHTFACE_SOURCE)),
    ("faces_emore", DatasetTerms("MS1MV2 (InsightFace's faces_emore)", INSIGHTFACE_TERMS, INSIGHTFACE_SOURCE)),
    ("faces_webface", DatasetTerms("CASIA-WebFace (InsightFace's faces_webface_112x112)", INSIGHTFACE_TERMS,
                                   INSIGHTFACE_SOURCE)),
    ("faces_vgg", DatasetTerms("VGGFace2 (InsightFace's faces_vgg_112x112)", INSIGHTFACE_TERMS, INSIGHTFACE_SOURCE)),
    ("ms1mv3", DatasetTerms("MS1MV3", INSIGHTFACE_TERMS, INSIGHTFACE_SOURCE)),
    ("ms1mv2", DatasetTerms("MS1MV2", INSIGHTFACE_TERMS, INSIGHTFACE_SOURCE)),
    ("webface260m", DatasetTerms("WebFace260M", *WEBFACE)),
    ("webface42m", DatasetTerms("WebFace42M (subset of WebFace260M)", *WEBFACE)),
    ("webface12m", DatasetTerms("WebFace12M (subset of WebFace260M)", *WEBFACE)),
    ("webface4m", DatasetTerms("WebFace4M (subset of WebFace260M)", *WEBFACE)),
    ("digiface", DatasetTerms("DigiFace-1M", "non-commercial research; licensed under the LICENSE file of its repository",
                              "https://github.com/microsoft/DigiFace1M (README)")),
    ("casia", DatasetTerms("CASIA-WebFace", UNKNOWN, "the terms of the copy used (not recorded here)")),
    ("vggface2", DatasetTerms("VGGFace2", UNKNOWN, "the terms of the copy used (not recorded here)")),
    ("dcface", DatasetTerms("DCFace", UNKNOWN, "https://github.com/mk-minchul/dcface (no terms recorded here)")),
)
SYNTHETIC = DatasetTerms("facetrain synth (procedurally drawn faces, no photographs)", "facetrain's licence (MIT)",
                         "facetrain's LICENSE")
SYNTH_SUMMARY = "synth_summary.json"  # what `facetrain synth` writes beside the folders it generates


def dataset_terms(name_or_path: str | os.PathLike) -> DatasetTerms | None:
    """The listed dataset a path or name names, else None (terms unknown)."""
    text = str(name_or_path).lower()
    for key, terms in KNOWN:
        if key in text:
            return terms
    return None


def training_data_terms(path: str | os.PathLike) -> DatasetTerms | None:
    """The terms of a training set: facetrain's own synthetic data (its `synth_summary.json` beside or in the
    folder), else a listed dataset named in the path, else None."""
    path = Path(path)
    if any((folder / SYNTH_SUMMARY).is_file() for folder in (path, path.parent)):
        return SYNTHETIC
    return dataset_terms(path)
