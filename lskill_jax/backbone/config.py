"""Backbone configuration: one frozen dataclass for Qwen3 and the Llama family.

The dataclass is hashable so it can be a static argument of jitted functions.
`from_hf_config` reads a transformers `config.json` dict (v4 or v5 layout) and refuses
every feature this port does not implement with a message that names it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

from lskill_jax.weights.hf_dir import UnsupportedConfigError

SUPPORTED_MODEL_TYPES = ("qwen3", "llama")


class Projection(NamedTuple):
  """One LoRA-able projection of a decoder layer, as every format names it."""
  hf: str     # module under `model.layers.{i}.` in transformers (and PEFT)
  d_in: str   # logical axis of its input features
  d_out: str  # logical axis of its output features


# The seven projections in canonical order (carve layout, file order). Param shapes and axes,
# HF/PEFT names and LoRA axes all derive from this one table.
PROJECTIONS: dict[str, Projection] = {
    "q": Projection("self_attn.q_proj", "embed", "q_heads"),
    "k": Projection("self_attn.k_proj", "embed", "kv_heads"),
    "v": Projection("self_attn.v_proj", "embed", "kv_heads"),
    "o": Projection("self_attn.o_proj", "q_heads", "embed"),
    "gate": Projection("mlp.gate_proj", "embed", "mlp"),
    "up": Projection("mlp.up_proj", "embed", "mlp"),
    "down": Projection("mlp.down_proj", "mlp", "embed"),
}
TARGETS = tuple(PROJECTIONS)


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling. kind is 'default', 'linear' or 'llama3'."""
  kind: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
  """Shapes and constants of a decoder-only backbone.

  `qk_norm=True` is Qwen3 (per-head RMSNorm on q and k before RoPE); False is Llama.
  """
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  rms_norm_eps: float
  tie_embeddings: bool
  qk_norm: bool
  max_position_embeddings: int = 32768
  rope_scaling: RopeScaling = RopeScaling()
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise UnsupportedConfigError(
          f"num_attention_heads={self.num_heads} is not a multiple of "
          f"num_key_value_heads={self.num_kv_heads}; grouped-query attention needs it.")
    if self.head_dim % 2:
      raise UnsupportedConfigError(f"head_dim={self.head_dim} must be even for RoPE.")

  @property
  def q_dim(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def kv_dim(self) -> int:
    return self.num_kv_heads * self.head_dim

  def feature_size(self, axis: str) -> int:
    """Width of a projection's feature axis, named by its logical axis ("embed", "mlp", ...)."""
    return {"embed": self.hidden_size, "q_heads": self.q_dim, "kv_heads": self.kv_dim,
            "mlp": self.intermediate_size}[axis]

  def projection_shapes(self) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of the seven LoRA-able projections, in canonical order."""
    return {t: (self.feature_size(p.d_in), self.feature_size(p.d_out))
            for t, p in PROJECTIONS.items()}

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _rope_from_hf(cfg: Mapping[str, Any]) -> tuple[float, RopeScaling]:
  """Read rope theta and scaling from v5 `rope_parameters` or the v4 top-level keys."""
  params = cfg.get("rope_parameters") or {}
  scaling = cfg.get("rope_scaling") or {}
  merged = {**scaling, **params}
  theta = merged.get("rope_theta", cfg.get("rope_theta"))
  if theta is None:
    raise UnsupportedConfigError(
        "config has no rope_theta (neither in rope_parameters nor at the top level); "
        "refusing to guess, since the class defaults differ from the trained values.")
  kind = merged.get("rope_type", merged.get("type", "default")) or "default"
  if kind == "default":
    return float(theta), RopeScaling()
  if kind == "linear":
    return float(theta), RopeScaling(kind="linear", factor=float(merged["factor"]))
  if kind == "llama3":
    return float(theta), RopeScaling(
        kind="llama3", factor=float(merged["factor"]),
        low_freq_factor=float(merged["low_freq_factor"]),
        high_freq_factor=float(merged["high_freq_factor"]),
        original_max_position_embeddings=int(merged["original_max_position_embeddings"]))
  raise UnsupportedConfigError(
      f"rope scaling type {kind!r} is not supported (supported: default, linear, llama3).")


def _as_id_tuple(v) -> tuple[int, ...]:
  if v is None:
    return ()
  return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)


def from_hf_config(cfg: Mapping[str, Any]) -> BackboneConfig:
  """Builds a BackboneConfig from a transformers config.json dict, validating support."""
  model_type = cfg.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    archs = cfg.get("architectures")
    raise UnsupportedConfigError(
        f"unknown architecture model_type={model_type!r} (architectures={archs}); "
        f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} (Qwen3ForCausalLM, LlamaForCausalLM).")
  if any(k in cfg and cfg[k] for k in ("num_experts", "num_local_experts", "moe_intermediate_size")):
    raise UnsupportedConfigError("mixture-of-experts configs are not supported (dense Qwen3/Llama only).")
  if cfg.get("use_sliding_window") or (model_type == "llama" and cfg.get("sliding_window")):
    raise UnsupportedConfigError(
        "sliding-window attention is not supported; set use_sliding_window=false "
        "or use a checkpoint with full attention.")
  if cfg.get("attention_bias") or cfg.get("mlp_bias"):
    raise UnsupportedConfigError("attention_bias / mlp_bias are not supported (bias-free backbones only).")
  act = cfg.get("hidden_act", "silu")
  if act != "silu":
    raise UnsupportedConfigError(f"hidden_act={act!r} is not supported (SwiGLU with silu only).")
  if model_type == "qwen3" and cfg.get("layer_types") and any(
      t != "full_attention" for t in cfg["layer_types"]):
    raise UnsupportedConfigError(f"layer_types={cfg['layer_types']} includes non-full attention.")

  hidden = int(cfg["hidden_size"])
  heads = int(cfg["num_attention_heads"])
  theta, scaling = _rope_from_hf(cfg)
  eos = _as_id_tuple(cfg.get("eos_token_id"))
  return BackboneConfig(
      model_type=model_type,
      vocab_size=int(cfg["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(cfg["intermediate_size"]),
      num_layers=int(cfg["num_hidden_layers"]),
      num_heads=heads,
      num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
      head_dim=int(cfg.get("head_dim") or hidden // heads),
      rope_theta=theta,
      rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(cfg.get("tie_word_embeddings", model_type == "qwen3" and False)),
      qk_norm=model_type == "qwen3",
      max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
      rope_scaling=scaling,
      bos_token_id=cfg.get("bos_token_id"),
      eos_token_ids=eos,
      pad_token_id=cfg.get("pad_token_id"),
  )


def to_hf_config(cfg: BackboneConfig) -> dict[str, Any]:
  """A transformers config.json dict (v5 layout) describing the same model."""
  arch = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}[cfg.model_type]
  rope: dict[str, Any] = {"rope_theta": cfg.rope_theta, "rope_type": cfg.rope_scaling.kind}
  sc = cfg.rope_scaling
  if sc.kind == "linear":
    rope["factor"] = sc.factor
  elif sc.kind == "llama3":
    rope.update(factor=sc.factor, low_freq_factor=sc.low_freq_factor,
                high_freq_factor=sc.high_freq_factor,
                original_max_position_embeddings=sc.original_max_position_embeddings)
  eos = list(cfg.eos_token_ids)
  out = {
      "architectures": [arch], "model_type": cfg.model_type, "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
      "max_position_embeddings": cfg.max_position_embeddings, "hidden_act": "silu",
      "attention_bias": False, "rope_parameters": rope,
      "bos_token_id": cfg.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
      "pad_token_id": cfg.pad_token_id,
  }
  if cfg.model_type == "llama":
    out["mlp_bias"] = False
  else:
    out["use_sliding_window"] = False
  return out
