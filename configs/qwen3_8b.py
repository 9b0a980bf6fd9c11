"""The paper's compiler on Qwen3-8B (rank 8, MetaLoRA 128, 4 generator layers, scale 1e-3)."""

import ml_collections

from lskill_jax.backbone.model import TARGETS

# Qwen3-8B's config.json fields that shape the compiler (for --describe without weights).
QWEN3_8B = dict(
    model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=151936,
    hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
    max_position_embeddings=40960, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    hidden_act="silu", eos_token_id=151645, bos_token_id=151643)


def compiler_defaults() -> ml_collections.ConfigDict:
  """The paper's compiler hyper-parameters; other configs override a few."""
  return ml_collections.ConfigDict(dict(
      rank=8,                      # LoRA rank of the generated adapters
      scale=1e-3,                  # the adapter's own scale s: ΔW = s·A·B
      targets=TARGETS,             # every projection of every layer
      metalora_rank=128,
      metalora_init=1e-3,          # variance of MetaLoRA A at init (B starts at zero)
      generator_depth=4,
      generator_width=0,           # 0 = backbone hidden size (the paper's choice)
      generator_heads=0,           # 0 = backbone attention heads
      generator_ffn_mult=2,
      layer_axis_first=True,       # generator layer 0 attends across backbone layers
      context_len=4087,            # longest document, in tokens (4096 minus chat overhead)
      remat=True,
      state_norm="none",           # memory states before the generator: none (paper), standardize, layernorm
  ))


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "qwen3_8b"
  c.model = ""                     # path to a Qwen3-8B HF directory
  c.backbone_shape = QWEN3_8B
  c.dtype = "bfloat16"
  c.compiler = compiler_defaults()
  return c
