"""Seed-compatible package: `from face_alignment import align` (see `face_alignment/align.py`)."""
