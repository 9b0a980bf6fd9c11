"""The decoder: Qwen3 (qk_norm=True) and the Llama family (qk_norm=False) as pure functions.

Params are a plain pytree (see `param_leaves`); the L decoder layers are stacked on a
leading axis and run with `lax.scan`. Weights are stored `[d_in, d_out]` so a projection
is `x @ W`, and every projection takes an optional LoRA term `coef · (x @ A) @ B` with
A `[d_in, r]`, B `[r, d_out]`, shared by the batch or one per row (`[B, d_in, r]`).

Attention masking is one rule for packed, padded and cached sequences: a query attends
to a key iff the key's slot is not after the query's slot, both carry the same segment id,
and the key's segment id is non-zero (0 marks padding).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax.backbone.config import PROJECTIONS, TARGETS, BackboneConfig
from lskill_jax.sharding import constrain

Params = dict[str, Any]
# target -> {"a": [L, (B,) d_in, r], "b": [L, (B,) r, d_out]}
LoraTree = Mapping[str, Mapping[str, jax.Array]]


_NEG_INF = -1e30  # finite, so fully masked (padding) rows stay NaN-free
# Query block of causal self-attention (see attend_causal).
CAUSAL_BLOCK = 128


class KVCache(NamedTuple):
  """Keys/values of every layer for slots [0, S) and the segment id of each slot (0 = empty)."""
  k: jax.Array    # [L, B, S, Nkv, D]
  v: jax.Array    # [L, B, S, Nkv, D]
  seg: jax.Array  # [B, S] int32


# ----------------------------------------------------------------------------- params


class Leaf(NamedTuple):
  """A params leaf described once: its shape and the logical axis of each dimension."""
  shape: tuple[int, ...]
  axes: tuple[str, ...]


def param_leaves(cfg: BackboneConfig) -> dict[str, Any]:
  """The params pytree as `Leaf`s, with 'layers' holding [L, ...] stacks."""
  L, h, D, V = cfg.num_layers, cfg.hidden_size, cfg.head_dim, cfg.vocab_size
  layers = {t: Leaf((L, cfg.feature_size(p.d_in), cfg.feature_size(p.d_out)),
                    ("layers", p.d_in, p.d_out)) for t, p in PROJECTIONS.items()}
  layers.update(attn_norm=Leaf((L, h), ("layers", "norm")),
                mlp_norm=Leaf((L, h), ("layers", "norm")))
  if cfg.qk_norm:
    layers.update(q_norm=Leaf((L, D), ("layers", "head_dim")),
                  k_norm=Leaf((L, D), ("layers", "head_dim")))
  tree = {"embed": Leaf((V, h), ("vocab", "embed")), "layers": layers,
          "final_norm": Leaf((h,), ("norm",))}
  if not cfg.tie_embeddings:
    tree["lm_head"] = Leaf((h, V), ("embed", "vocab"))
  return tree


def _leaf_field(tree, field: str):
  return {k: _leaf_field(v, field) if isinstance(v, dict) else getattr(v, field)
          for k, v in tree.items()}


def param_shapes(cfg: BackboneConfig) -> dict[str, Any]:
  """The params pytree as shapes: {name: shape} with 'layers' holding [L, ...] stacks."""
  return _leaf_field(param_leaves(cfg), "shape")


def param_logical_axes(cfg: BackboneConfig) -> dict[str, Any]:
  """Logical axis names for every leaf of the params pytree (same structure)."""
  return _leaf_field(param_leaves(cfg), "axes")


def lora_axes(target: str, batched: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Logical axes of a LoRA pair on `target`: A [L, (B,) d_in, r], B [L, (B,) r, d_out].

  The feature axes are the base projection's, so A and B shard like the weight they update;
  the rank is never sharded (tiny, and contracted at once).
  """
  p = PROJECTIONS[target]
  batch = ("batch",) if batched else ()
  return ("layers", *batch, p.d_in, "lora_rank"), ("layers", *batch, "lora_rank", p.d_out)


def init_params(key: jax.Array, cfg: BackboneConfig, dtype=jnp.float32) -> Params:
  """Random params (normal, std 0.02; norms at 1): for tests and benchmarks only."""
  shapes = param_shapes(cfg)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, shape, path in zip(keys, leaves, paths):
    if "norm" in path:
      out.append(jnp.ones(shape, dtype))
    else:
      out.append((0.02 * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------- pieces


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
  """RMSNorm over the last axis, statistics in fp32, result cast back like transformers."""
  x32 = x.astype(stat_dtype(x.dtype))
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return w * x32.astype(x.dtype)


def stat_dtype(dtype) -> jnp.dtype:
  """Dtype for statistics, softmax and logits: at least fp32 (fp64 stays fp64 in parity runs)."""
  return jnp.promote_types(dtype, jnp.float32)


def rope_inv_freq(cfg: BackboneConfig) -> np.ndarray:
  """Inverse RoPE frequencies [D/2] in fp32, with the configured frequency scaling."""
  D = cfg.head_dim
  exponents = np.arange(0, D, 2, dtype=np.int64).astype(np.float32) / np.float32(D)
  inv = (1.0 / (np.float32(cfg.rope_theta) ** exponents)).astype(np.float32)  # as transformers: fp32
  sc = cfg.rope_scaling
  if sc.kind == "linear":
    inv = inv / np.float32(sc.factor)
  elif sc.kind == "llama3":
    low_wl = sc.original_max_position_embeddings / sc.low_freq_factor
    high_wl = sc.original_max_position_embeddings / sc.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wl, inv / sc.factor, inv)
    smooth = (sc.original_max_position_embeddings / wavelen - sc.low_freq_factor) / (
        sc.high_freq_factor - sc.low_freq_factor)
    smoothed = (1 - smooth) * scaled / sc.factor + smooth * scaled
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    inv = np.where(medium, smoothed, scaled).astype(np.float32)
  return inv


def rope_tables(cfg: BackboneConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, T, D] for integer positions [B, T] (HF `rotate_half` layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(rope_inv_freq(cfg))
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, T, N, D]; rotates pairs (i, i + D/2) as transformers does."""
  half = x.shape[-1] // 2
  rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rot * sin


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """Position of each token inside its segment: [B, T] -> [B, T] (restarts at each new id)."""
  T = segment_ids.shape[-1]
  idx = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), segment_ids.shape)
  prev = jnp.concatenate([jnp.full_like(segment_ids[:, :1], -1), segment_ids[:, :-1]], axis=1)
  start = jnp.where(segment_ids != prev, idx, 0)
  return idx - jax.lax.cummax(start, axis=1)


def project(x: jax.Array, w: jax.Array, lora: Mapping[str, jax.Array] | None,
            coef: jax.Array | float) -> jax.Array:
  """x [B, T, d_in] @ w [d_in, d_out] (+ coef · (x @ A) @ B, shared or per-row A/B)."""
  y = jnp.einsum("bti,io->bto", x, w)
  if lora is None:
    return y
  a, b = lora["a"].astype(x.dtype), lora["b"].astype(x.dtype)
  coef = jnp.asarray(coef, x.dtype)
  if coef.ndim == 1:  # one coefficient per row
    coef = coef[:, None, None]
  if a.ndim == 2:
    low = jnp.einsum("bti,ir->btr", x, a)
    return y + jnp.einsum("btr,ro->bto", low * coef, b)
  low = jnp.einsum("bti,bir->btr", x, a)
  return y + jnp.einsum("btr,bro->bto", low * coef, b)


def attention_mask(q_slot, q_seg, k_seg) -> jax.Array:
  """[B, T, S] bool: causal by slot, same segment, key not padding."""
  S = k_seg.shape[-1]
  k_slot = jnp.arange(S, dtype=jnp.int32)
  causal = k_slot[None, None, :] <= q_slot[:, :, None]
  same = q_seg[:, :, None] == k_seg[:, None, :]
  return causal & same & (k_seg[:, None, :] != 0)


def attend_causal(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                  block: int = CAUSAL_BLOCK) -> jax.Array:
  """`attend` for queries at slots [0, T) of keys that are causal by slot: query block
  [i, i + block) only meets keys [0, i + block), so the fully masked upper blocks are
  never computed (at T = 1024 and block 128, 56% of the score FLOPs and memory).

  Equal to `attend` except on fully masked (padding) query rows, whose outputs are a mean
  over fewer keys; no valid position reads them.
  """
  T = q.shape[1]
  if T <= block:
    return attend(q, k, v, mask)
  outs = [attend(q[:, i:i + block], k[:, :i + block], v[:, :i + block],
                 mask[:, i:i + block, :i + block]) for i in range(0, T, block)]
  return jnp.concatenate(outs, axis=1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query attention. q [B,T,Nq,D], k/v [B,S,Nkv,D], mask [B,T,S] -> [B,T,Nq,D]."""
  B, T, Nq, D = q.shape
  Nkv = k.shape[2]
  q = q.reshape(B, T, Nkv, Nq // Nkv, D)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=stat_dtype(q.dtype))
  scores = scores * (D ** -0.5)
  scores = jnp.where(mask[:, None, None], scores, _NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
  return out.reshape(B, T, Nq, D)


# ----------------------------------------------------------------------------- decoder


def _layer(cfg: BackboneConfig, h, lp, lora, coef, cos, sin, mask, cache, cache_index,
           causal_from_zero: bool):
  """One decoder layer. Returns (h, cache).

  causal_from_zero: the T queries sit at slots [0, T) and the mask is causal by slot
  (a forward pass, or a prefill into an empty cache), so `attend_causal` may skip blocks.

  cache: None, or (k_all, v_all, layer): the stacked [L, B, S, Nkv, D] buffers and this
  layer's index. The new keys/values are written straight into the stacked buffers, which
  XLA then updates in place; writing them into a copy of the layer's slice first and that
  slice back into the stack made every decode step rewrite the whole cache twice.
  """
  B, T, _ = h.shape
  lora = lora or {}
  x = rms_norm(h, lp["attn_norm"], cfg.rms_norm_eps)
  q = project(x, lp["q"], lora.get("q"), coef).reshape(B, T, cfg.num_heads, cfg.head_dim)
  k = project(x, lp["k"], lora.get("k"), coef).reshape(B, T, cfg.num_kv_heads, cfg.head_dim)
  v = project(x, lp["v"], lora.get("v"), coef).reshape(B, T, cfg.num_kv_heads, cfg.head_dim)
  if cfg.qk_norm:
    q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
    k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
  q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
  q = constrain(q, ("batch", "act_seq", "act_heads", None))
  if cache is not None:
    k_all, v_all, layer = cache
    at = (layer, 0, cache_index, 0, 0)
    k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), at)
    v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), at)
    k, v = k_all[layer], v_all[layer]
    cache = (k_all, v_all, layer)
  if causal_from_zero:
    attn = attend_causal(q, k, v, mask)
  else:
    attn = attend(q, k, v, mask)
  attn = attn.reshape(B, T, cfg.q_dim)
  h = h + project(attn, lp["o"], lora.get("o"), coef)
  h = constrain(h, ("batch", "act_seq", "act_embed"))
  x = rms_norm(h, lp["mlp_norm"], cfg.rms_norm_eps)
  gate = project(x, lp["gate"], lora.get("gate"), coef)
  up = project(x, lp["up"], lora.get("up"), coef)
  act = constrain(jax.nn.silu(gate) * up, ("batch", "act_seq", "act_mlp"))
  h = h + project(act, lp["down"], lora.get("down"), coef)
  h = constrain(h, ("batch", "act_seq", "act_embed"))
  return h, cache


def decode_layers(params: Params, cfg: BackboneConfig, h: jax.Array, *,
                  positions: jax.Array, segment_ids: jax.Array,
                  lora: LoraTree | None = None, lora_coef: jax.Array | float = 1.0,
                  cache: KVCache | None = None, cache_index: jax.Array | int = 0,
                  collect_last: int = 0, remat: bool = False):
  """Runs the stacked decoder layers over embeddings h [B, T, H].

  positions/segment_ids: [B, T]. With `cache`, the T new tokens are written at slots
  [cache_index, cache_index + T) and attend to every earlier non-empty slot.
  `collect_last=n` also returns each layer's output at the last n positions [L, B, n, H]
  (the compiler reads its memory slots this way). Returns (h, new_cache, collected).
  """
  B, T, _ = h.shape
  cos, sin = rope_tables(cfg, positions)
  if cache is None:
    q_slot = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = attention_mask(q_slot, segment_ids, segment_ids)
    new_seg = None
  else:
    new_seg = jax.lax.dynamic_update_slice(cache.seg, segment_ids.astype(cache.seg.dtype),
                                           (0, cache_index))
    q_slot = cache_index + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = attention_mask(q_slot, segment_ids, new_seg)

  # A static 0 (not a traced index) is what lets a prefill skip the masked blocks.
  causal_from_zero = cache is None or (isinstance(cache_index, int) and cache_index == 0)

  def body(carry, xs):
    h, ck_all, cv_all = carry
    lp, lora_l, idx = xs
    layer_cache = (ck_all, cv_all, idx) if ck_all is not None else None
    h, layer_cache = _layer(cfg, h, lp, lora_l, lora_coef, cos, sin, mask, layer_cache,
                            cache_index, causal_from_zero)
    if layer_cache is not None:
      ck_all, cv_all, _ = layer_cache
    out = h[:, T - collect_last:] if collect_last else None
    return (h, ck_all, cv_all), out

  if remat:
    body = jax.checkpoint(body, prevent_cse=False)
  ck = cache.k if cache is not None else None
  cv = cache.v if cache is not None else None
  xs = (params["layers"], lora, jnp.arange(cfg.num_layers))
  (h, ck, cv), collected = jax.lax.scan(body, (h, ck, cv), xs)
  new_cache = KVCache(ck, cv, new_seg) if cache is not None else None
  return h, new_cache, collected


def embed(params: Params, tokens: jax.Array) -> jax.Array:
  """Token embeddings [B, T, H] in the params dtype."""
  return jnp.take(params["embed"], tokens, axis=0)


def lm_logits(params: Params, cfg: BackboneConfig, h: jax.Array) -> jax.Array:
  """Final norm and LM head; logits [B, T, V] in fp32 (fp64 for fp64 params)."""
  h = rms_norm(h, params["final_norm"], cfg.rms_norm_eps)
  out = stat_dtype(h.dtype)
  if cfg.tie_embeddings:
    logits = jnp.einsum("bth,vh->btv", h, params["embed"], preferred_element_type=out)
  else:
    logits = jnp.einsum("bth,hv->btv", h, params["lm_head"], preferred_element_type=out)
  return constrain(logits, ("batch", "act_seq", "act_vocab"))


def forward(params: Params, cfg: BackboneConfig, tokens: jax.Array, *,
            segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
            lora: LoraTree | None = None, lora_coef: jax.Array | float = 1.0,
            remat: bool = False) -> jax.Array:
  """Full-sequence logits [B, T, V] (fp32) for tokens [B, T].

  segment_ids [B, T] (default all 1) packs several sequences per row and marks padding
  with 0; positions default to the index inside each segment.
  """
  if segment_ids is None:
    segment_ids = jnp.ones(tokens.shape, jnp.int32)
  if positions is None:
    positions = segment_positions(segment_ids)
  h = constrain(embed(params, tokens), ("batch", "act_seq", "act_embed"))
  h, _, _ = decode_layers(params, cfg, h, positions=positions, segment_ids=segment_ids,
                          lora=lora, lora_coef=lora_coef, remat=remat)
  return lm_logits(params, cfg, h)


def init_cache(cfg: BackboneConfig, batch: int, length: int, dtype) -> KVCache:
  """Empty KV cache for `batch` rows and `length` slots."""
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                 jnp.zeros((batch, length), jnp.int32))


def step_with_cache(params: Params, cfg: BackboneConfig, tokens: jax.Array,
                    positions: jax.Array, segment_ids: jax.Array, cache: KVCache,
                    cache_index: jax.Array | int, *, lora: LoraTree | None = None,
                    lora_coef: jax.Array | float = 1.0, last_only: bool = True):
  """Prefill or decode: writes T tokens into the cache at cache_index; returns (logits, cache).

  With last_only, logits are only computed for the last position ([B, 1, V]).
  """
  h = embed(params, tokens)
  h, cache, _ = decode_layers(params, cfg, h, positions=positions, segment_ids=segment_ids,
                              lora=lora, lora_coef=lora_coef, cache=cache,
                              cache_index=cache_index)
  if last_only:
    h = h[:, -1:]
  return lm_logits(params, cfg, h), cache
