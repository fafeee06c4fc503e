"""Input guards: pixel limits checked before decoding, photo reading, data-path resolution, and the
restricted unpickler for pickled pair sets."""
