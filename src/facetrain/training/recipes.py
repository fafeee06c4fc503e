"""Published training recipes (`facetrain train --recipe NAME`, `facetrain recipes`).

A recipe fills the defaults of the flags its source states; the command line and a `--config` file
still win (`TrainConfig.from_dict`). Every value is the one its source file states; what a source does
not state is listed under `not_published`, never filled in. Recipes set the model, head, optimisation,
schedule and augmentation, never data paths or hardware (GPUs, loader workers, precision): those are
listed under `notes` when the source states them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facetrain.errors import ConfigError

_ADAFACE_AUG = {"low_res_augmentation_prob": 0.2, "crop_augmentation_prob": 0.2, "photometric_augmentation_prob": 0.2}
_ADAFACE_HEAD = {"head": "adaface", "m": 0.4, "h": 0.333, "t_alpha": 0.01}
# mk-minchul/CVLface, cvlface/research/recognition/code/run_v1: optims/configs/step_sgd.yaml
_CVLFACE_STEP_SGD = {"epochs": 26, "lr": 0.1, "lr_milestones": [12, 20, 24], "lr_gamma": 0.1, "momentum": 0.9,
                     "weight_decay": 5e-4, "warmup_epochs": 1.0}
_CVLFACE = "mk-minchul/CVLface, cvlface/research/recognition/code/run_v1/"
_CVLFACE_NOTES = (
    "total batch 1792 = 7 GPUs x trainers.batch_size 256 (Lightning Fabric DDP); on fewer GPUs give --batch_size",
    "optims/configs/step_sgd.yaml: max_grad_norm 5.0 (gradient-norm clipping; facetrain does not clip)",
    "precision 32-true with float32_matmul_precision 'high' (not set by the recipe)",
    "AdaFace's own scripts/run_ir50_ms1mv2.sh trains with the same schedule (26 epochs, 12,20,24, lr 0.1, "
    "m 0.4, h 0.333, augmentations 0.2) without warm-up, at --batch_size 256 over 4 GPUs",
)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    sources: tuple[str, ...]  # repository and file (or paper) each value comes from
    flags: dict[str, Any]  # TrainConfig fields the recipe sets
    reported: str  # the numbers the source reports for this recipe
    not_published: tuple[str, ...] = ()  # what the sources do not state (not filled in)
    notes: tuple[str, ...] = ()  # what the sources state that facetrain does not set or cannot reproduce

    def values(self) -> dict[str, Any]:
        """The flags' values, lists copied (a config may change its own)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self.flags.items()}


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "adaface_casia", "AdaFace IR-50 on CASIA-WebFace (10,572 identities, 490,623 images)",
        (_CVLFACE + "scripts/examples/run_adaface_ir50_casia.sh (with optims/configs/step_sgd.yaml, "
         "losses/configs/adaface.yaml, data_augs/configs/basic_v1.yaml, dataset/configs/casia.yaml)",
         "mk-minchul/AdaFace README.md (results of the released R50 CASIA-WebFace model)"),
        {"arch": "ir_50", **_ADAFACE_HEAD, "batch_size": 1792, **_CVLFACE_STEP_SGD, **_ADAFACE_AUG},
        "AdaFace README, R50 CASIA-WebFace: LFW 99.42, CFP-FP 96.41, CPLFW 89.97, CALFW 93.23, AgeDB 94.38, "
        "average 94.68",
        ("AdaFace's repository (scripts/) has no CASIA-WebFace script; the values are the AdaFace author's "
         "CVLface example for this dataset",),
        _CVLFACE_NOTES),
    Recipe(
        "adaface_webface4m", "AdaFace IR-101 on WebFace4M (205,990 identities, 4,235,242 images)",
        (_CVLFACE + "scripts/examples/run_adaface_ir101_webface4m.sh (with optims/configs/step_sgd.yaml, "
         "losses/configs/adaface.yaml, data_augs/configs/basic_v1.yaml, dataset/configs/webface4m.yaml)",
         "mk-minchul/AdaFace README.md (results of the released R100 WebFace4M model)"),
        {"arch": "ir_101", **_ADAFACE_HEAD, "batch_size": 1792, **_CVLFACE_STEP_SGD, **_ADAFACE_AUG},
        "AdaFace README, R100 WebFace4M: LFW 99.80, CFP-FP 99.17, CPLFW 94.63, CALFW 96.05, AgeDB 97.90, "
        "average 97.51; IJB-B 96.03, IJB-C 97.39 (TAR at FAR 0.01%)",
        ("AdaFace's repository (scripts/) has no WebFace4M script (its issue #157 asks for one); the values are "
         "the AdaFace author's CVLface example for this dataset",),
        (*_CVLFACE_NOTES, "the classifier is the full FC layer (classifiers/configs/fc.yaml), not Partial FC")),
    Recipe(
        "face_synthetics", "IR-50 AdaFace on two compounded synthetic datasets (Idiap face_synthetics)",
        ("idiap/face_synthetics, synthetics/adaface/scripts/train.sh (what scripts/train.sh here runs)",
         "mk-minchul/AdaFace config.py and train_val.py (the defaults that script leaves: momentum 0.9, "
         "lr_gamma 0.1, weight decay 5e-4 hard-coded, t_alpha 0.01)"),
        {"arch": "ir_50", **_ADAFACE_HEAD, "batch_size": 256, "epochs": 30, "lr": 0.1, "lr_milestones": [12, 20, 26],
         "lr_gamma": 0.1, "momentum": 0.9, "weight_decay": 5e-4, **_ADAFACE_AUG},
        "not published in the repository (no results in its README files)",
        ("warm-up: none in the script (AdaFace's main.py has none)",),
        ("--gpus 1 --use_16bit --num_workers 8 in the script (hardware: not set by the recipe)",
         "--custom_num_class 30000: the script's two datasets (count taken from the data here)")),
    Recipe(
        "dcface", "a face recognition model trained on DCFace's synthetic data (CVPR 2023)",
        ("mk-minchul/dcface README.md (dataset releases dcface_0.5m_oversample_xid and "
         "dcface_1.2m_oversample_xid, RecordIO; 'Training Face Recognition Model: to be released soon')",
         "mk-minchul/dcface issue #29 (asks how the recognition model was trained; unanswered)"),
        {},
        "not checked: the paper's tables (assets/main.pdf) are not in the repository's text",
        ("every training value: the repository publishes no recognition-training script or configuration",),
        ("convert a release with `bash scripts/prep_data_train_folder.sh DIR` (docs/training.md)",)),
    Recipe(
        "idiff_face", "IDiff-Face: ResNet-50 with CosFace on IDiff-Face synthetic data (ICCV 2023)",
        ("fdbtrs/IDiff-Face face_recognition_training/config/config.py, train.py and "
         "train_large_scale_with_augment.sh (the README's command)",
         "fdbtrs/IDiff-Face README.md; the paper's abstract (arXiv 2308.04995)"),
        {"arch": "ir_50", "head": "cosface", "m": 0.35, "s": 64.0, "batch_size": 256, "lr": 0.05, "momentum": 0.9,
         "weight_decay": 5e-4},
        "LFW 98.00% (abstract; synthetic uniform, 25% CPD, 10K identities x 50 images)",
        ("a fixed epoch count and milestones: train.py lowers the rate x0.1 when the mean validation accuracy "
         "has not improved for 4 epochs (ReduceLROnPlateau) and stops after 6, at most 200 epochs",),
        ("lr 0.05 = learning_rate 0.1 / 512 x total batch 256 (batch_size 128 x 2 processes), as train.py scales it",
         "the backbone is InsightFace's iresnet50 (the IR-50 layout of --arch ir_50, other parameter names)",
         "augmentation: RandAugment ra_4_16 (--augment True); facetrain has no RandAugment",
         "gradient-norm clipping at 5 (clip_grad_norm_; facetrain does not clip)")),
    Recipe(
        "digiface", "a face recognition model trained on DigiFace-1M (WACV 2023)",
        ("microsoft/DigiFace1M README.md and docs/index.html (the project page)",),
        {},
        "project page: 1.22M images (10K x 72 + 100K x 5): LFW 96.17, CFP-FP 89.81, CPLFW 82.23, AgeDB 81.10, "
        "CALFW 82.55, average 86.37; fine-tuned with 120K real images: LFW 99.33, average 93.61",
        ("every training value: the repository holds the data and paper.pdf, no training script or "
         "configuration, and its pages state none",),
        ("the project page says aggressive data augmentation narrows the synthetic-to-real gap, without values",)),
)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def describe(recipe: Recipe) -> list[str]:
    """The recipe as lines: what it sets, from where, what its source reports and leaves out."""
    shown = " ".join(f"--{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in recipe.flags.items())
    lines = [f"recipe {recipe.name}: {recipe.title}",
             f"  sets: {shown or 'nothing (its source publishes no training values)'}"]
    lines += [f"  source: {s}" for s in recipe.sources]
    lines += [f"  reported: {recipe.reported}"]
    lines += [f"  not published: {s}" for s in recipe.not_published]
    lines += [f"  note: {s}" for s in recipe.notes]
    return lines


def recipe_notes(config: Any) -> list[str]:
    """What the run's log says about its recipe: the recipe, then the values given that differ from it."""
    if not config.recipe:
        return []
    recipe = get_recipe(config.recipe)
    changed = [f"--{k} {getattr(config, k)} (recipe: {v})" for k, v in recipe.flags.items() if getattr(config, k) != v]
    return describe(recipe) + ([f"  given instead: {', '.join(changed)}"] if changed else [])
