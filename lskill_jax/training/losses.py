"""Next-token cross-entropy with a compiled adapter mounted, the context-distillation KL
against the frozen backbone reading the document, and target weights by how much the document
helps predict each token, all computed in sequence chunks so no [B, T, V] logits are ever
materialised at once (they are recomputed in the backward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lskill_jax.backbone import model


def chunked_ce(params, cfg, h: jax.Array, targets: jax.Array, weights: jax.Array,
               chunk: int = 512, teacher_h: jax.Array | None = None):
  """Σ_t weights · CE(logits(h), targets) per row: [B]; h are final hidden states before the norm.

  With teacher_h (the teacher's final hidden states at the same positions, [B, T, H]), returns
  (ce [B], kl [B]) where kl = Σ_t weights · KL(softmax(teacher) ‖ softmax(student)).
  """
  B, T, H = h.shape
  chunk = min(chunk, T)
  split = lambda x: _in_chunks(x, chunk)
  xs = (split(h), split(targets), split(weights)) + ((split(teacher_h),) if teacher_h is not None else ())

  @jax.checkpoint
  def one(hc, tc, wc, *teacher):
    logits = model.lm_logits(params, cfg, hc)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
    ce = jnp.sum(wc * (logz - picked), axis=-1)
    if not teacher:
      return ce, jnp.zeros_like(ce)
    t_logp = jax.nn.log_softmax(model.lm_logits(params, cfg, teacher[0]), axis=-1)
    kl = jnp.sum(jnp.exp(t_logp) * (t_logp - (logits - logz[..., None])), axis=-1)
    return ce, jnp.sum(wc * kl, axis=-1)

  def body(total, chunk_xs):
    ce, kl = one(*chunk_xs)
    return (total[0] + ce, total[1] + kl), None

  zeros = jnp.zeros((B,), jnp.float32)
  (ce, kl), _ = jax.lax.scan(body, (zeros, zeros), xs)
  return (ce, kl) if teacher_h is not None else ce


def _in_chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[B, T, ...] -> [n, B, chunk, ...], T zero-padded to a multiple of chunk (for a scan)."""
  B, T = x.shape[:2]
  pad = -T % chunk
  if pad:
    x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
  return x.reshape(B, -1, chunk, *x.shape[2:]).swapaxes(0, 1)


def token_ce(params, cfg, h: jax.Array, targets: jax.Array, chunk: int = 512) -> jax.Array:
  """CE(logits(h[:, t]), targets[:, t]) at every position: [B, T], computed in chunks of T."""
  B, T, _ = h.shape
  chunk = min(chunk, T)

  def one(_, xs):
    hc, tc = xs
    logits = model.lm_logits(params, cfg, hc)
    picked = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
    return None, jax.nn.logsumexp(logits, axis=-1) - picked

  _, ce = jax.lax.scan(one, None, (_in_chunks(h, chunk), _in_chunks(targets, chunk)))
  return ce.swapaxes(0, 1).reshape(B, -1)[:, :T]


def context_gain_weights(backbone_params, cfg, tokens, segment_ids, weights, teacher_h,
                         chunk: int = 512) -> jax.Array:
  """Target weights [B, T] (token t's, like `weights`) scaled by how much reading the document
  helps the frozen backbone predict each token: max(CE without it − CE with it, 0), where
  teacher_h (`teacher_hidden`) is the backbone with the document in context. Each row is
  rescaled to keep its total weight, so the loss keeps its per-token normalisation.

  Tokens any reader of this kind of text predicts (syntax, boilerplate) weigh little; those
  only the document supplies (its names, flags, values) weigh most. Without gradient.
  """
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  plain = final_hidden(backbone_params, cfg, tokens, segment_ids)
  gain = jnp.maximum(token_ce(backbone_params, cfg, plain, targets, chunk)
                     - token_ce(backbone_params, cfg, teacher_h, targets, chunk), 0.0)
  # Position t predicts token t + 1: move the gains onto the tokens they belong to.
  gain = jnp.concatenate([jnp.zeros_like(gain[:, :1]), gain[:, :-1]], axis=1)
  scaled = weights * gain
  total = jnp.sum(weights, axis=-1, keepdims=True)
  return jax.lax.stop_gradient(scaled * total / jnp.maximum(jnp.sum(scaled, -1, keepdims=True), 1e-6))


def final_hidden(backbone_params, cfg, tokens, segment_ids, lora=None, coef=0.0, *,
                 remat: bool = False) -> jax.Array:
  """The backbone's final hidden states before the norm, [B, T, H], positions per segment."""
  positions = model.segment_positions(segment_ids)
  h = model.embed(backbone_params, tokens)
  h, _, _ = model.decode_layers(backbone_params, cfg, h, positions=positions,
                                segment_ids=segment_ids, lora=lora, lora_coef=coef, remat=remat)
  return h


def teacher_hidden(backbone_params, cfg, doc_tokens, doc_mask, tokens, segment_ids) -> jax.Array:
  """The frozen backbone's final hidden states over the conversation, read with the document in
  its context: the sequence is [evidence (left-padded), conversation (right-padded)] in one
  segment, so conversation positions continue after the document. Returns [B, T_conv, H],
  without gradient (the teacher of the context-distillation term)."""
  seq = jnp.concatenate([doc_tokens, tokens], axis=1)
  seg = jnp.concatenate([(doc_mask > 0).astype(segment_ids.dtype), segment_ids], axis=1)
  h = final_hidden(backbone_params, cfg, seq, seg)
  return jax.lax.stop_gradient(h[:, doc_tokens.shape[1]:])


def lm_loss(backbone_params, cfg, tokens, segment_ids, weights, lora, coef, *, remat: bool,
            chunk: int = 512, per_row: bool = False, teacher_h: jax.Array | None = None):
  """(Σ weighted CE, Σ weights) for predicting tokens[t+1] from tokens[:t+1].

  weights[t] marks token t as a target; the loss at position t uses weights[t+1]. With
  per_row, both sums are per batch row ([B]) instead of scalars. With teacher_h (from
  `teacher_hidden`), returns (Σ CE, Σ KL(teacher ‖ student), Σ weights) on the same targets.
  """
  with jax.named_scope("conversation"):  # labels the ops in profiles and HLO dumps
    h = final_hidden(backbone_params, cfg, tokens, segment_ids, lora, coef, remat=remat)
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  w = jnp.concatenate([weights[:, 1:], jnp.zeros_like(weights[:, :1])], axis=1)
  with jax.named_scope("lm_head_loss"):
    out = chunked_ce(backbone_params, cfg, h, targets, w, chunk, teacher_h)
  sums = (out if teacher_h is not None else (out,)) + (jnp.sum(w, axis=-1),)
  return sums if per_row else tuple(jnp.sum(x) for x in sums)
