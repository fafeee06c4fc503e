"""Face-recognition backbones: forward(x) -> (unit embedding (B,512), norm (B,1))."""
from facetrain.models.registry import FAMILIES, build_model, canonical_name, infer_arch, list_models

__all__ = ["FAMILIES", "build_model", "canonical_name", "infer_arch", "list_models"]
