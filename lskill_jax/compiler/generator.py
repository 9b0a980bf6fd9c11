"""The generator: post-LN transformer encoder layers that alternate their attention axis.

Input and output are memory states [B, L, M, H]. Layer i attends across the L backbone
layers (separately for each memory slot) when it is a "layer" layer, and across the M
slots (separately within each backbone layer) otherwise; `layer_axis_first` picks which
comes first. Zero-initialised position tables for layers and slots are added once.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lskill_jax.sharding import constrain

_STATE_AXES = ("batch", None, None, "act_embed")


class EncoderLayer(nn.Module):
  """Post-LN encoder layer: x = LN(x + MHA(x)); x = LN(x + FFN(x)), exact GELU."""
  width: int
  heads: int
  ffn: int
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):  # [..., S, W], attention over S
    attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width,
                                           out_features=self.width, name="attn")(x, x)
    x = nn.LayerNorm(epsilon=self.eps, name="norm1")(x + attn)
    y = nn.Dense(self.ffn, name="ffn_in")(x)
    y = nn.Dense(self.width, name="ffn_out")(jax.nn.gelu(y, approximate=False))
    return nn.LayerNorm(epsilon=self.eps, name="norm2")(x + y)


class Generator(nn.Module):
  """Memory states [B, L, M, H] -> generated states [B, L, M, H]."""
  num_layers: int        # backbone layers L
  memory_tokens: int     # M
  hidden: int            # H
  depth: int = 4
  width: int = 0         # 0 = H (no projections, as in the paper)
  heads: int = 8
  ffn_mult: int = 2
  layer_axis_first: bool = True

  @nn.compact
  def __call__(self, states):
    H = self.hidden
    W = self.width or H
    states = states + self.param("layer_pe", nn.initializers.zeros, (self.num_layers, H))[:, None]
    states = states + self.param("token_pe", nn.initializers.zeros, (self.memory_tokens, H))[None]
    x = nn.Dense(W, name="in_proj")(states) if W != H else states
    for i in range(self.depth):
      across_layers = (i % 2 == 0) == self.layer_axis_first
      x = constrain(x, _STATE_AXES)
      layer = EncoderLayer(W, self.heads, self.ffn_mult * W, name=f"layer_{i}")
      if across_layers:
        x = jnp.swapaxes(layer(jnp.swapaxes(x, 1, 2)), 1, 2)  # attend over L per slot
      else:
        x = layer(x)  # attend over M within each layer
    x = nn.Dense(H, name="out_proj")(x) if W != H else x
    return constrain(x, _STATE_AXES)
