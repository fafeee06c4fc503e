"""Training: the AdaFace recipe (config, run folder, loop, checkpoints, DDP, Partial FC). The Python API's
`facetrain.train(config)` is `launch.train_from`."""
