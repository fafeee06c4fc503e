"""`facetrain audit`: is a face dataset fit to train on? Identity collisions, intra-class variability and
leakage of reference faces (benchmarks, a generator's training data), measured with a face model."""
