"""The frozen decoder: Qwen3 / Llama port, loading, KV-cache generation."""

from lskill_jax.backbone.config import BackboneConfig, UnsupportedConfigError, from_hf_config
from lskill_jax.backbone.loading import (Backbone, WeightMismatchError, load_backbone,
                                         random_backbone, with_mesh)
