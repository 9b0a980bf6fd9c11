"""The embedded default: SmolLM2-135M-Instruct (30 layers, hidden 576, 9 heads).

The generator keeps the paper's shape (4 post-LN layers at the backbone width, FFN 2H,
9 heads): ~16M parameters. MetaLoRA rank 32 instead of 128 keeps the trainable encode-pass
update in proportion to the much smaller backbone. Documents up to 2048 tokens.
"""

from configs import qwen3_8b


def get_config():
  c = qwen3_8b.get_config()
  c.name = "smollm2_135m"
  c.model = "smollm2-135m"
  c.backbone_shape = None
  c.dtype = "float32"
  c.compiler.metalora_rank = 32
  c.compiler.context_len = 2048
  return c
