"""AdamW with the paper's schedule (linear warmup, then linear decay to zero), global-norm
clipping, and weight decay on weight matrices only (not norms, biases, position tables or
memory tokens)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

_NO_DECAY = ("norm", "bias", "layer_pe", "token_pe", "memory", "state_stats")


def decay_mask(params):
  """True for leaves that get weight decay."""
  def keep(path, leaf):
    name = jax.tree_util.keystr(path)
    return not any(k in name for k in _NO_DECAY)
  return jax.tree_util.tree_map_with_path(keep, params)


def schedule(lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  warmup_steps = max(1, min(warmup_steps, total_steps))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup_steps),
       optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup_steps))], [warmup_steps])


def _memory_only(params):
  return {k: jax.tree.map(lambda _: k == "memory", v) for k, v in params.items()}


def clip(clip_norm: float, per_group: bool) -> optax.GradientTransformation:
  """Gradient-norm clipping over all params, or separately per top-level group.

  Per group (memory tokens, MetaLoRA, generator) keeps one group's large gradient from
  shrinking the others': zero-initialised memory tokens sit where the backbone's RMSNorm has
  slope 1/sqrt(eps), so their gradient norm is 10-100x the rest and varies wildly per batch.
  """
  whole = optax.clip_by_global_norm(clip_norm)
  if not per_group:
    return whole

  def update(updates, state, params=None):
    del params
    return {k: whole.update(g, optax.EmptyState())[0] for k, g in updates.items()}, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _without_updates(inner: optax.GradientTransformation, groups: tuple[str, ...]):
  """inner with the updates of top-level param groups `groups` set to zero. Its state is
  inner's own, so a run can freeze groups when it resumes from a checkpoint that did not."""
  def update(updates, state, params=None):
    updates, state = inner.update(updates, state, params)
    return {k: jax.tree.map(jnp.zeros_like, v) if k in groups else v for k, v in updates.items()}, state
  return optax.GradientTransformation(inner.init, update)


def make(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.01,
         clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         memory_lr_scale: float = 1.0, clip_per_group: bool = False, frozen=()):
  """(optimizer, schedule). frozen: top-level param groups whose updates are zero (no decay,
  no momentum carried over from before they were frozen)."""
  sched = schedule(lr, warmup_steps, total_steps)
  parts = [clip(clip_norm, clip_per_group),
           optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)]
  if memory_lr_scale != 1.0:
    parts.append(optax.masked(optax.scale(memory_lr_scale), _memory_only))
  opt = optax.chain(*parts)
  return (_without_updates(opt, tuple(frozen)) if frozen else opt), sched
