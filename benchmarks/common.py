"""Shared helpers for benchmark scripts: timing and naming the machine."""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

from lskill_jax.backbone import model


def machine() -> str:
  """A one-line description of the machine the figures come from."""
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  return (f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on "
          f"{dev.platform}:{getattr(dev, 'device_kind', '')} x{jax.device_count()}")


def best_of(fn, repeats: int = 3) -> float:
  """Minimum wall time of `fn()` over repeats (after one untimed warm-up call)."""
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def prefill_last(backbone_params, cfg, tokens):
  """Plain backbone over tokens [B, T] with the logits of the last position only, [B, 1, V]:
  a prefill as transformers runs it with `logits_to_keep=1` (jit it with cfg static)."""
  seg = jnp.ones(tokens.shape, jnp.int32)
  h, _, _ = model.decode_layers(backbone_params, cfg, model.embed(backbone_params, tokens),
                                positions=model.segment_positions(seg), segment_ids=seg)
  return model.lm_logits(backbone_params, cfg, h[:, -1:])
