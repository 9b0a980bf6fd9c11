"""Next-token cross-entropy with a compiled adapter mounted, computed in sequence chunks so the
[B, T, V] logits are never materialised at once (they are recomputed in the backward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lskill_jax.backbone import model


def chunked_ce(params, cfg, h: jax.Array, targets: jax.Array, weights: jax.Array,
               chunk: int = 512) -> jax.Array:
  """Σ_t weights · CE(logits(h), targets) per row: [B]; h are final hidden states before the norm."""
  B, T, H = h.shape
  chunk = min(chunk, T)
  pad = -T % chunk
  if pad:
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    weights = jnp.pad(weights, ((0, 0), (0, pad)))
  n = (T + pad) // chunk
  hs = h.reshape(B, n, chunk, H).swapaxes(0, 1)
  ts = targets.reshape(B, n, chunk).swapaxes(0, 1)
  ws = weights.reshape(B, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(hc, tc, wc):
    logits = model.lm_logits(params, cfg, hc)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
    return jnp.sum(wc * (logz - picked), axis=-1)

  def body(total, xs):
    return total + one(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((B,), jnp.float32), (hs, ts, ws))
  return total


def lm_loss(backbone_params, cfg, tokens, segment_ids, weights, lora, coef, *, remat: bool,
            chunk: int = 512, per_row: bool = False):
  """(Σ weighted CE, Σ weights) for predicting tokens[t+1] from tokens[:t+1].

  weights[t] marks token t as a target; the loss at position t uses weights[t+1]. With
  per_row, both sums are per batch row ([B]) instead of scalars.
  """
  positions = model.segment_positions(segment_ids)
  h = model.embed(backbone_params, tokens)
  h, _, _ = model.decode_layers(backbone_params, cfg, h, positions=positions,
                                segment_ids=segment_ids, lora=lora, lora_coef=coef, remat=remat)
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  w = jnp.concatenate([weights[:, 1:], jnp.zeros_like(weights[:, :1])], axis=1)
  rows = chunked_ce(backbone_params, cfg, h, targets, w, chunk)
  if per_row:
    return rows, jnp.sum(w, axis=-1)
  return jnp.sum(rows), jnp.sum(w)
