"""Training data: the authors' on-disk formats, corpus building, Stage-1/2 example builders, Grain pipelines."""
