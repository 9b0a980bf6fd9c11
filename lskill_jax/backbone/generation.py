"""KV-cache generation as one pure function: prefill, then a `lax.while_loop` of decode steps.

Prompts are left-padded to a common length P (padding carries segment id 0, so it is
never attended); generated tokens occupy cache slots [P, P + max_new_tokens).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lskill_jax.backbone import model
from lskill_jax.backbone.config import BackboneConfig


def sample_next(logits: jax.Array, key: jax.Array, temperature, top_p, greedy: bool) -> jax.Array:
  """Next token ids [B] from last-position logits [B, V]."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
  sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  # Keep the smallest prefix whose mass reaches top_p (always at least one token).
  before = jnp.cumsum(probs, axis=-1) - probs
  cutoff_idx = jnp.sum(before < top_p, axis=-1, keepdims=True) - 1
  threshold = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
  logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate_tokens(params, cfg: BackboneConfig, prompt: jax.Array, prompt_mask: jax.Array,
                    key: jax.Array, *, max_new_tokens: int, stop_ids: tuple[int, ...],
                    pad_id: int, greedy: bool, temperature=0.0, top_p=1.0,
                    lora=None, lora_coef=1.0):
  """Generates up to max_new_tokens per row.

  prompt: int32 [B, P] left-padded; prompt_mask: [B, P] (1 = token, 0 = padding).
  Returns (tokens [B, max_new_tokens] with pad_id after a row stops, lengths [B] = number of
  tokens before the first stop token, or max_new_tokens).
  """
  B, P = prompt.shape
  cache = model.init_cache(cfg, B, P + max_new_tokens, params["embed"].dtype)
  seg = prompt_mask.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0)
  logits, cache = model.step_with_cache(params, cfg, prompt, positions, seg, cache,
                                        0, lora=lora, lora_coef=lora_coef)
  key, sub = jax.random.split(key)
  first = sample_next(logits[:, -1], sub, temperature, top_p, greedy)
  next_pos = jnp.sum(seg, axis=1).astype(jnp.int32)
  stops = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)

  class State(NamedTuple):
    i: jax.Array
    tok: jax.Array
    cache: model.KVCache
    out: jax.Array
    done: jax.Array
    lengths: jax.Array
    key: jax.Array

  def cond(s: State):
    return (s.i < max_new_tokens) & ~jnp.all(s.done)

  def body(s: State):
    is_stop = jnp.isin(s.tok, stops)
    out = s.out.at[:, s.i].set(jnp.where(s.done, pad_id, s.tok))
    lengths = s.lengths + (~s.done & ~is_stop).astype(jnp.int32)
    done = s.done | is_stop
    logits, cache = model.step_with_cache(
        params, cfg, s.tok[:, None], (next_pos + s.i)[:, None], jnp.ones((B, 1), jnp.int32),
        s.cache, P + s.i, lora=lora, lora_coef=lora_coef)
    key, sub = jax.random.split(s.key)
    tok = sample_next(logits[:, -1], sub, temperature, top_p, greedy)
    return State(s.i + 1, tok, cache, out, done, lengths, key)

  init = State(jnp.int32(0), first, cache, jnp.full((B, max_new_tokens), pad_id, jnp.int32),
               jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32), key)
  final = jax.lax.while_loop(cond, body, init)
  return final.out, final.lengths
