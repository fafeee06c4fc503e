"""Face-recognition backbones: forward(x) -> (unit embedding (B,512), norm (B,1))."""
from facetrain.models.registry import build_model, canonical_name, list_models

__all__ = ["build_model", "canonical_name", "list_models"]
