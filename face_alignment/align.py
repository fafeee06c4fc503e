"""Seed API: `align.get_aligned_face(path, rgb_pil_image=None)` -> aligned 112x112 RGB PIL face, or
None (with a warning naming the image) when no face is found. Implemented in facetrain.alignment."""
from facetrain.alignment.aligner import get_aligned_face

__all__ = ["get_aligned_face"]
