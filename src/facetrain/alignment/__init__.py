"""Face detection (MTCNN, in AdaFace's and facenet-pytorch's conventions) and alignment to the 112x112 template.

The API function `facetrain.align(image)` (in `facetrain.api`) is the public entry point.
"""
