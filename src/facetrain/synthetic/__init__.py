"""Procedural synthetic faces: identities as parameter vectors drawn with OpenCV under per-image
pose, lighting, expression, age, blur, noise and JPEG nuisance, written as an image folder, InsightFace
`.bin` sets on held-out identities, RecordIO and an IJB-like protocol. Deterministic from a seed."""
from facetrain.synthetic.generate import generate_dataset
from facetrain.synthetic.identity import Identity, sample_identity
from facetrain.synthetic.profiles import BENCHMARK_NAMES, PROFILES, Nuisance, sample_nuisance
from facetrain.synthetic.render import RenderedFace, render_face, render_identity_image

__all__ = [
    "BENCHMARK_NAMES", "PROFILES", "Identity", "Nuisance", "RenderedFace", "generate_dataset", "render_face",
    "render_identity_image", "sample_identity", "sample_nuisance",
]
