"""Dataset tools behind the data verbs: convert, compound, make-bin, info, DCFace releases, and the
marker that lets a folder output resume."""
