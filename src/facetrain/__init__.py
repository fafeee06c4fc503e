"""facetrain: train, evaluate and use face-recognition models (AdaFace recipe, no mxnet)."""

__version__ = "0.1.0"
