"""Training data and skill documents: parsing a skill file, the authors' on-disk formats,
corpus building, Stage-1/2 example builders, Grain pipelines."""
