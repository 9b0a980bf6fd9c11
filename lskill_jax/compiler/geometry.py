"""Compiler geometry: how many numbers one layer's LoRA needs and where each factor is carved.

P = Σ_targets r·(d_in + d_out) numbers per layer; M = ceil(P / H) memory slots hold them
(the numbers past P that rounding up adds are dropped). Within a layer's flattened
[M·H] vector the targets follow q, k, v, o, gate, up, down, each A ([d_in, r], row-major)
then B ([r, d_out], row-major).
"""

from __future__ import annotations

import dataclasses
import math

from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.backbone.model import TARGETS


@dataclasses.dataclass(frozen=True)
class Slice:
  target: str
  factor: str  # "a" or "b"
  start: int
  shape: tuple[int, int]

  @property
  def size(self) -> int:
    return self.shape[0] * self.shape[1]


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The carve layout for one backbone, rank and target list."""
  num_layers: int
  hidden: int
  rank: int
  targets: tuple[str, ...]
  slices: tuple[Slice, ...]

  @property
  def per_layer(self) -> int:  # P
    return sum(s.size for s in self.slices)

  @property
  def memory_tokens(self) -> int:  # M
    return math.ceil(self.per_layer / self.hidden)

  @property
  def per_adapter(self) -> int:
    return self.per_layer * self.num_layers

  @property
  def dropped_per_layer(self) -> int:
    return self.memory_tokens * self.hidden - self.per_layer


def geometry(cfg: BackboneConfig, rank: int, targets=TARGETS) -> Geometry:
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"LoRA targets must be a non-empty subset of {TARGETS}; got {list(targets)}.")
  shapes = cfg.projection_shapes()
  slices, offset = [], 0
  for t in TARGETS:
    if t not in targets:
      continue
    d_in, d_out = shapes[t]
    for factor, shape in (("a", (d_in, rank)), ("b", (rank, d_out))):
      slices.append(Slice(t, factor, offset, shape))
      offset += shape[0] * shape[1]
  return Geometry(cfg.num_layers, cfg.hidden_size, rank,
                  tuple(t for t in TARGETS if t in targets), tuple(slices))
