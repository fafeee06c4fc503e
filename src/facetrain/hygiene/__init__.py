"""`facetrain check`: is a benchmark copy or a dataset what the model expects? Counts against the
published sizes, undecodable and duplicate images, the file's sha256, the alignment of the faces to the
112x112 template, and (with a model) the channel order."""
