"""The skill compiler as pure functions: `init(key, spec)` and `compile_lora(hparams, ...)`.

compile_lora runs the frozen backbone over [document ; M memory tokens] with a trainable
MetaLoRA, keeps every layer's output at the memory positions ([B, L, M, H]; the LM head is
never computed), passes them through the generator and carves each layer's flattened states
into LoRA factors. The paper multiplies both factors by √scale; we keep the raw factors and
carry `scale` as the adapter's own s (ΔW = s · A · B is the same number, and the factors stay
O(1), which suits bf16).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax import sharding as shd
from lskill_jax.backbone import model
from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.compiler.geometry import Geometry, geometry
from lskill_jax.compiler.generator import Generator
from lskill_jax.sharding import constrain

HParams = dict[str, Any]

# How memory states are conditioned before the generator. "none" is the paper. On a trained
# backbone the states are mostly shared by every document (a per-layer, per-slot pattern and a
# few massive dimensions), so the part that carries the document is a few percent of what the
# generator sees. "standardize" subtracts each (layer, slot, dim)'s mean over calibration
# documents and divides by each (layer, dim)'s between-document spread (frozen statistics kept
# with the params, see `calibrate`); "layernorm" is a non-affine norm of each state vector.
STATE_NORMS = ("none", "standardize", "layernorm")


@dataclasses.dataclass(frozen=True)
class CompilerSpec:
  """Everything static about a compiler (hashable, so jit can key on it)."""
  backbone: BackboneConfig
  rank: int = 8
  scale: float = 1e-3
  targets: tuple[str, ...] = model.TARGETS
  metalora_rank: int = 128
  metalora_init: float = 1e-3    # MetaLoRA A ~ N(0, metalora_init); B = 0
  generator_depth: int = 4
  generator_width: int = 0       # 0 = backbone hidden size
  generator_heads: int = 0       # 0 = backbone attention heads
  generator_ffn_mult: int = 2
  layer_axis_first: bool = True
  context_len: int = 4096        # longest document (tokens) the compiler accepts
  remat: bool = True
  state_norm: str = "none"       # memory states before the generator: see STATE_NORMS

  def __post_init__(self):
    if self.state_norm not in STATE_NORMS:
      raise ValueError(f"state_norm must be one of {STATE_NORMS}, not {self.state_norm!r}.")

  @property
  def geometry(self) -> Geometry:
    return geometry(self.backbone, self.rank, self.targets)

  def generator(self) -> Generator:
    g = self.geometry
    heads = self.generator_heads or self.backbone.num_heads
    width = self.generator_width or self.backbone.hidden_size
    if width % heads:
      raise ValueError(f"generator width {width} is not divisible by its {heads} heads.")
    return Generator(num_layers=g.num_layers, memory_tokens=g.memory_tokens, hidden=g.hidden,
                     depth=self.generator_depth, width=self.generator_width, heads=heads,
                     ffn_mult=self.generator_ffn_mult, layer_axis_first=self.layer_axis_first)


def init(key: jax.Array, spec: CompilerSpec) -> HParams:
  """Fresh compiler params: zero memory tokens, MetaLoRA (A small random, B zero), generator."""
  g = spec.geometry
  shapes = spec.backbone.projection_shapes()
  k_meta, k_gen = jax.random.split(key)
  meta_keys = jax.random.split(k_meta, len(model.TARGETS))
  R, L = spec.metalora_rank, g.num_layers
  metalora = {"a": {}, "b": {}}
  for k, t in zip(meta_keys, model.TARGETS):
    d_in, d_out = shapes[t]
    metalora["a"][t] = np.sqrt(spec.metalora_init) * jax.random.normal(k, (L, d_in, R), jnp.float32)
    metalora["b"][t] = jnp.zeros((L, R, d_out), jnp.float32)
  dummy = jnp.zeros((1, g.num_layers, g.memory_tokens, g.hidden), jnp.float32)
  # Jitted, the init's forward pass is one program; run op by op it left about 350 MB of
  # per-op executables and buffers resident at the SmolLM2 shape (same values either way).
  params = {
      "memory": jnp.zeros((g.memory_tokens, g.hidden), jnp.float32),
      "metalora": metalora,
      "generator": jax.jit(spec.generator().init)(k_gen, dummy)["params"],
  }
  if spec.state_norm == "standardize":  # identity until `calibrate` fills them in
    params["state_stats"] = {"mean": jnp.zeros((L, g.memory_tokens, g.hidden), jnp.float32),
                             "inv_std": jnp.ones((L, g.hidden), jnp.float32)}
  return params


def param_logical_axes(hparams: HParams) -> Any:
  """Logical axes for every compiler leaf (MetaLoRA like LoRA; generator kernels FSDP on dim 0)."""
  def meta(factor, t):
    return model.lora_axes(t, batched=False)["ab".index(factor)]

  def gen(path, x):
    name = jax.tree_util.keystr(path)
    if x.ndim >= 2 and "kernel" in name:
      return ("embed",) + (None,) * (x.ndim - 1)
    if x.ndim == 2:  # position tables
      return (None, "embed")
    return (None,) * x.ndim

  axes = {
      "memory": ("memory", "embed"),
      "metalora": {f: {t: meta(f, t) for t in hparams["metalora"][f]} for f in ("a", "b")},
      "generator": jax.tree_util.tree_map_with_path(gen, hparams["generator"]),
  }
  if "state_stats" in hparams:
    axes["state_stats"] = {"mean": (None, None, "embed"), "inv_std": (None, "embed")}
  return axes


def encode_memory(hparams: HParams, backbone_params, tokens: jax.Array, mask: jax.Array, *,
                  spec: CompilerSpec) -> jax.Array:
  """Memory-slot states after every backbone layer: [B, L, M, H] (fp32).

  tokens/mask: [B, T], documents left-padded (mask 0 on padding). Positions count from each
  document's first token, so the result does not depend on how much padding a row has.
  """
  cfg = spec.backbone
  B = tokens.shape[0]
  M = spec.geometry.memory_tokens
  emb = model.embed(backbone_params, tokens)
  mem = jnp.broadcast_to(hparams["memory"].astype(emb.dtype), (B, M, cfg.hidden_size))
  h = constrain(jnp.concatenate([emb, mem], axis=1), ("batch", "act_seq", "act_embed"))
  seg = jnp.concatenate([mask.astype(jnp.int32), jnp.ones((B, M), jnp.int32)], axis=1)
  positions = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0)
  metalora = {t: {"a": hparams["metalora"]["a"][t], "b": hparams["metalora"]["b"][t]}
              for t in hparams["metalora"]["a"]}
  _, _, collected = model.decode_layers(backbone_params, cfg, h, positions=positions,
                                        segment_ids=seg, lora=metalora, lora_coef=1.0,
                                        collect_last=M, remat=spec.remat)
  states = jnp.swapaxes(collected, 0, 1).astype(jnp.float32)  # [B, L, M, H]
  return constrain(states, ("batch", None, None, "act_embed"))


def normalize_states(hparams: HParams, states: jax.Array, spec: CompilerSpec) -> jax.Array:
  """Memory states [B, L, M, H] conditioned for the generator as spec.state_norm says."""
  if spec.state_norm == "standardize":
    stats = jax.lax.stop_gradient(hparams["state_stats"])  # frozen: calibrated, not trained
    return (states - stats["mean"]) * stats["inv_std"][:, None]
  if spec.state_norm == "layernorm":
    mean = jnp.mean(states, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(states - mean), axis=-1, keepdims=True)
    return (states - mean) * jax.lax.rsqrt(var + 1e-6)
  return states


_encode_jit = jax.jit(encode_memory, static_argnames="spec")


def state_statistics(states: jax.Array, floor: float = 1e-2) -> dict[str, jax.Array]:
  """Standardisation statistics from memory states [N, L, M, H] of N >= 2 documents.

  mean: [L, M, H]; inv_std: [L, H], one over the between-document spread of each (layer, dim)
  pooled over slots. Spreads below `floor` times their layer's median are raised to it, so a
  dimension that (almost) never varies is not blown up into noise.
  """
  if states.shape[0] < 2:
    raise ValueError(f"calibrating state statistics needs at least 2 documents, got {states.shape[0]}.")
  mean = jnp.mean(states, axis=0)
  std = jnp.sqrt(jnp.mean(jnp.square(states - mean), axis=(0, 2)))
  std = jnp.maximum(std, floor * jnp.median(std, axis=-1, keepdims=True) + 1e-12)
  return {"mean": mean, "inv_std": 1.0 / std}


def calibrate(hparams: HParams, backbone_params, doc_batches, *, spec: CompilerSpec) -> HParams:
  """hparams with state statistics measured on documents (a no-op unless standardizing).

  doc_batches: iterable of (tokens, mask) pairs [b, T] as compile_lora takes them; their
  memory states are gathered on the host (from every process, when the batches span several),
  so calibrate on tens of documents, not thousands.
  """
  if spec.state_norm != "standardize":
    return hparams
  states = np.concatenate([shd.to_host(_encode_jit(hparams, backbone_params, t, m, spec=spec))
                           for t, m in doc_batches])
  return {**hparams, "state_stats": state_statistics(jnp.asarray(states))}


def carve(states: jax.Array, spec: CompilerSpec) -> tuple[dict, dict]:
  """Generated states [B, L, M, H] -> LoRA factors a[t] [L, B, d_in, r], b[t] [L, B, r, d_out].

  The factors are unscaled: mount them with coefficient α · spec.scale.
  """
  g = spec.geometry
  B, L = states.shape[:2]
  flat = states.reshape(B, L, -1)[:, :, :g.per_layer]
  out: dict[str, dict] = {"a": {}, "b": {}}
  for s in g.slices:
    piece = flat[:, :, s.start:s.start + s.size].reshape(B, L, *s.shape)
    out[s.factor][s.target] = jnp.swapaxes(piece, 0, 1)
  return out["a"], out["b"]


def compile_lora(hparams: HParams, backbone_params, tokens: jax.Array, mask: jax.Array, *,
                 spec: CompilerSpec) -> tuple[dict, dict]:
  """Documents [B, T] (left-padded, mask) -> per-document LoRA factors ([L, B, ...] each)."""
  # Named scopes label the ops of each part in profiles and HLO dumps.
  with jax.named_scope("encode"):
    states = encode_memory(hparams, backbone_params, tokens, mask, spec=spec)
    states = normalize_states(hparams, states, spec)
  with jax.named_scope("generator"):
    generated = spec.generator().apply({"params": hparams["generator"]}, states)
  with jax.named_scope("carve"):
    return carve(generated, spec)
