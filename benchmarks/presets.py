"""The backbone and compiler shapes of the authors' CPU benchmark harness presets
(`../shared/bench/official_latentskill_bench.py`), as our configs.

`tiny`: 2 layers, hidden 64. `small`: SmolLM2-135M on a Qwen3 block with intermediate 1528
(the harness moves 1536 -> 1528 so that one layer's LoRA is a whole number of hidden-size
memory slots, M = 141). Both: r = 8, MetaLoRA rank 128, a 4-layer generator at the backbone
width (FFN 2H, heads as the backbone), scale 1e-3, random fp32 weights.
"""

from __future__ import annotations

import jax

from lskill_jax.backbone import model
from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.compiler import hypernet
from lskill_jax.compiler.hypernet import CompilerSpec

PRESETS = {
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16, tie_embeddings=False),
    "small": dict(vocab_size=49152, hidden_size=576, intermediate_size=1528, num_layers=30,
                  num_heads=9, num_kv_heads=3, head_dim=64, tie_embeddings=True),
}


def backbone_config(preset: str) -> BackboneConfig:
  """A Qwen3 config (q/k norms, rope theta 1e6) with the preset's shapes."""
  return BackboneConfig(model_type="qwen3", rope_theta=1e6, rms_norm_eps=1e-6, qk_norm=True,
                        **PRESETS[preset])


def spec(preset: str, *, remat: bool = True, rank: int = 8, metalora_rank: int = 128,
         generator_depth: int = 4) -> CompilerSpec:
  """The compiler the harness builds on that backbone."""
  return CompilerSpec(backbone=backbone_config(preset), rank=rank, scale=1e-3,
                      metalora_rank=metalora_rank, generator_depth=generator_depth, remat=remat)


def build(preset: str, seed: int = 0, **spec_overrides):
  """(spec, backbone params, compiler params), random and fp32."""
  s = spec(preset, **spec_overrides)
  k_bb, k_comp = jax.random.split(jax.random.PRNGKey(seed))
  return s, model.init_params(k_bb, s.backbone), hypernet.init(k_comp, s)
