"""The adapter type: a LoRA pytree over the seven projections of every layer, plus its scale.

For a target with input d_in and output d_out, `a[t]` is `[L, d_in, r]` and `b[t]` is
`[L, r, d_out]`, or `[L, B, d_in, r]` / `[L, B, r, d_out]` for one adapter per batch row.
Mounted with coefficient α the projection becomes `y = x W + α · scale · (x A) B`.
Layers outside a subset hold zeros, so every adapter scans with the backbone unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax import sharding as shd
from lskill_jax.adapter import files, merging, peft_io
from lskill_jax.backbone import model
from lskill_jax.backbone.config import BackboneConfig

TARGETS = model.TARGETS


class AdapterMismatchError(ValueError):
  """An adapter does not fit the backbone it is mounted on."""


def base_fingerprint(cfg: BackboneConfig) -> str:
  """Identifies a backbone architecture: config fields that shape the function, and weight shapes."""
  fields = {k: v for k, v in cfg.to_dict().items()
            if k not in ("bos_token_id", "eos_token_ids", "pad_token_id", "max_position_embeddings")}
  blob = json.dumps({"config": fields, "shapes": model.param_shapes(cfg)}, sort_keys=True,
                    default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _freeze(meta: Mapping[str, Any]) -> tuple:
  """Metadata as a hashable tuple of items (lists become tuples), as jit's static fields need."""
  def fz(v):
    if isinstance(v, (list, tuple)):
      return tuple(fz(x) for x in v)
    if isinstance(v, dict):
      return tuple(sorted((k, fz(x)) for k, x in v.items()))
    return v
  return tuple(sorted((k, fz(v)) for k, v in meta.items() if v is not None))


def text_hash(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Adapter:
  """LoRA factors for a backbone; a pytree whose leaves are the `a`/`b` arrays.

  scale: the adapter's own s (the compiler emits ΔW = s·A·B); meta: JSON-able provenance
  (base fingerprint, source text hash, producer, subset notes).
  """
  a: dict[str, jax.Array]
  b: dict[str, jax.Array]
  scale: float = dataclasses.field(default=1.0, metadata=dict(static=True))
  meta: tuple = dataclasses.field(default=(), metadata=dict(static=True))

  # ------------------------------------------------------------------ basic properties

  @property
  def targets(self) -> tuple[str, ...]:
    return tuple(t for t in TARGETS if t in self.a)

  @property
  def rank(self) -> int:
    return int(self.a[self.targets[0]].shape[-1])

  @property
  def num_layers(self) -> int:
    return int(self.a[self.targets[0]].shape[0])

  @property
  def batched(self) -> bool:
    return self.a[self.targets[0]].ndim == 4

  @property
  def batch_size(self) -> int | None:
    return int(self.a[self.targets[0]].shape[1]) if self.batched else None

  @property
  def metadata(self) -> dict[str, Any]:
    return dict(self.meta)

  def with_meta(self, **updates) -> "Adapter":
    meta = {**self.metadata, **updates}
    return dataclasses.replace(self, meta=_freeze(meta))

  @classmethod
  def from_factors(cls, a: Mapping[str, Any], b: Mapping[str, Any], scale: float = 1.0,
                   **meta) -> "Adapter":
    """An adapter from factor dicts (targets in any subset of q,k,v,o,gate,up,down)."""
    unknown = set(a) ^ set(b) | (set(a) - set(TARGETS))
    if unknown:
      raise ValueError(f"adapter targets must be the same for A and B and among {TARGETS}; "
                       f"got A={sorted(a)}, B={sorted(b)}.")
    return cls({t: jnp.asarray(a[t]) for t in TARGETS if t in a},
               {t: jnp.asarray(b[t]) for t in TARGETS if t in b}, float(scale), _freeze(meta))

  @classmethod
  def zeros(cls, cfg: BackboneConfig, rank: int, targets: Sequence[str] = TARGETS,
            scale: float = 1.0, dtype=jnp.float32) -> "Adapter":
    shapes = cfg.projection_shapes()
    L = cfg.num_layers
    return cls.from_factors({t: jnp.zeros((L, shapes[t][0], rank), dtype) for t in targets},
                            {t: jnp.zeros((L, rank, shapes[t][1]), dtype) for t in targets},
                            scale, base_fingerprint=base_fingerprint(cfg))

  # ------------------------------------------------------------------ validation, mounting

  def check_fits(self, cfg: BackboneConfig, where: str = "adapter") -> None:
    """Raises AdapterMismatchError unless every factor fits the backbone's projections."""
    fp = self.metadata.get("base_fingerprint")
    if fp is not None and fp != base_fingerprint(cfg):
      raise AdapterMismatchError(
          f"{where} was made for base model {fp} ({self.metadata.get('base_model', 'unknown')}) "
          f"but is being mounted on base model {base_fingerprint(cfg)} ({cfg.model_type}, "
          f"{cfg.num_layers} layers, hidden {cfg.hidden_size}); compile or convert it for this backbone.")
    shapes = cfg.projection_shapes()
    for t in self.targets:
      d_in, d_out = shapes[t]
      a, b = self.a[t], self.b[t]
      lead = a.shape[:-2]
      want_a, want_b = (cfg.num_layers, *lead[1:], d_in, a.shape[-1]), (cfg.num_layers, *lead[1:], a.shape[-1], d_out)
      if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
        raise AdapterMismatchError(
            f"{where}: target {t} has A{list(a.shape)} B{list(b.shape)} but the backbone needs "
            f"A{list(want_a)} B{list(want_b)} ([layers, (batch,) d_in, r] / [layers, (batch,) r, d_out]).")

  def logical_axes(self) -> tuple[dict, dict]:
    """Logical axes of A and B, derived from the base projection's (rank never sharded)."""
    return ({t: model.lora_axes(t, self.batched)[0] for t in self.targets},
            {t: model.lora_axes(t, self.batched)[1] for t in self.targets})

  def shardings(self, mesh) -> "Adapter":
    a_axes, b_axes = self.logical_axes()
    return dataclasses.replace(
        self, a={t: shd.named_sharding(mesh, a_axes[t], self.a[t].shape) for t in self.targets},
        b={t: shd.named_sharding(mesh, b_axes[t], self.b[t].shape) for t in self.targets})

  def mount(self, bb, alpha: float = 1.0):
    """(lora tree for `backbone.model`, coefficient α·s); placed on the backbone's mesh."""
    self.check_fits(bb.config)
    ad = jax.device_put(self, self.shardings(shd.mesh_or_default(bb.mesh)))
    lora = {t: {"a": ad.a[t], "b": ad.b[t]} for t in ad.targets}
    return lora, jnp.float32(alpha * self.scale)

  # ------------------------------------------------------------------ files and export
  # (the formats live in files.py / peft_io.py / merging.py, which deal in factor dicts)

  def save(self, path: str) -> None:
    """Writes `path/adapter.safetensors` + `path/adapter.json` atomically."""
    files.save(self, path)

  @staticmethod
  def load(path: str, backbone=None) -> "Adapter":
    """Reads and validates an adapter directory (and its fit to `backbone`, if given)."""
    a, b, scale, meta = files.read(path)
    # The metadata is set as a whole: its keys must not be taken for from_factors' arguments.
    adapter = dataclasses.replace(Adapter.from_factors(a, b, scale), meta=_freeze(meta))
    if backbone is not None:
      adapter.check_fits(backbone.config, where=path)
    return adapter

  @staticmethod
  def from_peft(path: str, backbone) -> "Adapter":
    """Imports a PEFT LoRA adapter directory for `backbone`."""
    a, b, scale, meta = peft_io.import_peft(path, backbone.config)
    return Adapter.from_factors(a, b, scale, base_fingerprint=base_fingerprint(backbone.config),
                                **meta)

  def export_peft(self, path: str, backbone, alpha: float = 1.0,
                  base_model_name_or_path: str | None = None) -> None:
    """Writes a PEFT adapter directory with α·s folded into B."""
    peft_io.export_peft(self, path, backbone, alpha, base_model_name_or_path)

  def merged(self, backbone, alpha: float = 1.0):
    """The backbone with W + α·s·A·B baked in (single-skill serving)."""
    return merging.merge(backbone, self, alpha)

  # ------------------------------------------------------------------ arithmetic

  def delta(self, target: str, layer: int, row: int | None = None) -> np.ndarray:
    """The dense update s·A·B [d_in, d_out] of one target and layer (for checks, small models)."""
    a, b = np.asarray(self.a[target][layer], np.float64), np.asarray(self.b[target][layer], np.float64)
    if row is not None:
      a, b = a[row], b[row]
    return self.scale * a @ b

  def scaled(self, w: float) -> "Adapter":
    """w · ΔW (B is scaled, so the result stays valid for negative w)."""
    return dataclasses.replace(self, b={t: self.b[t] * w for t in self.targets})

  def __sub__(self, other: "Adapter") -> "Adapter":
    return weighted_sum([self, other], [1.0, -1.0])

  def __add__(self, other: "Adapter") -> "Adapter":
    return weighted_sum([self, other], [1.0, 1.0])

  def subset(self, layers: Iterable[int] | slice | None = None,
             targets: Iterable[str] | None = None) -> "Adapter":
    """Keeps only some layers (others become zero) and/or some targets (others dropped)."""
    keep_t = tuple(t for t in self.targets if targets is None or t in set(targets))
    if not keep_t:
      raise ValueError(f"no targets left; this adapter has {self.targets}.")
    L = self.num_layers
    if layers is None:
      mask = np.ones(L, bool)
    else:
      mask = np.zeros(L, bool)
      mask[np.arange(L)[layers] if isinstance(layers, slice) else np.asarray(list(layers), int)] = True
    m = jnp.asarray(mask)

    def cut(x):
      return x * m.reshape((L,) + (1,) * (x.ndim - 1)).astype(x.dtype)

    kept = [int(i) for i in np.flatnonzero(mask)]
    return dataclasses.replace(
        self, a={t: cut(self.a[t]) for t in keep_t}, b={t: cut(self.b[t]) for t in keep_t}
    ).with_meta(layers=kept if len(kept) < L else None, targets=list(keep_t))

  def reduce_rank(self, rank: int) -> tuple["Adapter", dict[str, float]]:
    """Best rank-`rank` approximation of every ΔW (via QR + SVD of the small factors).

    Returns (adapter, relative Frobenius error per target, max over layers).
    """
    a_out, b_out, errors = {}, {}, {}
    for t in self.targets:
      a = np.asarray(self.a[t], np.float64)
      b = np.asarray(self.b[t], np.float64)
      qa, ra = np.linalg.qr(a)                                   # [..., d_in, R], [..., R, R]
      qb, rb = np.linalg.qr(np.swapaxes(b, -1, -2))              # [..., d_out, R], [..., R, R]
      u, s, vt = np.linalg.svd(ra @ np.swapaxes(rb, -1, -2))     # core [..., R, R]
      k = min(rank, s.shape[-1])
      root = np.sqrt(s[..., :k])
      new_a = qa @ (u[..., :, :k] * root[..., None, :])
      new_b = (root[..., :, None] * vt[..., :k, :]) @ np.swapaxes(qb, -1, -2)
      if k < rank:  # pad with zeros so the rank is exactly as asked
        new_a = np.concatenate([new_a, np.zeros((*new_a.shape[:-1], rank - k))], -1)
        new_b = np.concatenate([new_b, np.zeros((*new_b.shape[:-2], rank - k, new_b.shape[-1]))], -2)
      total = np.sqrt(np.sum(s ** 2, axis=-1))
      lost = np.sqrt(np.sum(s[..., k:] ** 2, axis=-1))
      errors[t] = float(np.max(np.where(total > 0, lost / np.maximum(total, 1e-300), 0.0)))
      dtype = self.a[t].dtype
      a_out[t], b_out[t] = jnp.asarray(new_a, dtype), jnp.asarray(new_b, dtype)
    return dataclasses.replace(self, a=a_out, b=b_out), errors

  # ------------------------------------------------------------------ batching

  @staticmethod
  def stack(adapters: Sequence["Adapter"]) -> "Adapter":
    """One adapter per batch row: [L, B, ...] factors (scales folded into B, ranks padded)."""
    if not adapters:
      raise ValueError("stack needs at least one adapter.")
    targets = sorted({t for ad in adapters for t in ad.targets}, key=TARGETS.index)
    rank = max(ad.rank for ad in adapters)
    a, b = {}, {}
    for t in targets:
      ref = next(ad for ad in adapters if t in ad.a)
      L, d_in, d_out = ref.a[t].shape[0], ref.a[t].shape[-2], ref.b[t].shape[-1]
      cols_a, cols_b = [], []
      for ad in adapters:
        if ad.batched:
          raise ValueError("stack takes shared (unbatched) adapters.")
        if t in ad.a:
          pa, pb = ad.a[t], ad.b[t] * ad.scale
        else:
          pa, pb = jnp.zeros((L, d_in, 0)), jnp.zeros((L, 0, d_out))
        pad = rank - pa.shape[-1]
        cols_a.append(jnp.pad(pa, ((0, 0), (0, 0), (0, pad))))
        cols_b.append(jnp.pad(pb, ((0, 0), (0, pad), (0, 0))))
      a[t], b[t] = jnp.stack(cols_a, 1), jnp.stack(cols_b, 1)
    fps = {ad.metadata.get("base_fingerprint") for ad in adapters}
    meta = {"base_fingerprint": fps.pop()} if len(fps) == 1 else {}
    return Adapter.from_factors(a, b, 1.0, **meta)

  def row(self, i: int) -> "Adapter":
    if not self.batched:
      raise ValueError("row() needs a batched adapter.")
    return dataclasses.replace(self, a={t: v[:, i] for t, v in self.a.items()},
                               b={t: v[:, i] for t, v in self.b.items()})


def weighted_sum(adapters: Sequence[Adapter], weights: Sequence[float]) -> Adapter:
  """Σ w_i · ΔW_i exactly, by concatenating ranks: [w1·s1·A1 | w2·s2·A2], [B1; B2].

  The result's rank is the sum of the ranks; `reduce_rank` brings it back down.
  """
  if len(adapters) != len(weights) or not adapters:
    raise ValueError("weighted_sum needs one weight per adapter.")
  fps = {ad.metadata.get("base_fingerprint") for ad in adapters} - {None}
  if len(fps) > 1:
    raise AdapterMismatchError(f"cannot add adapters made for different base models: {sorted(fps)}")
  if len({ad.batched for ad in adapters}) > 1:
    raise ValueError("cannot add shared and per-row adapters.")
  targets = sorted({t for ad in adapters for t in ad.targets}, key=TARGETS.index)
  a, b = {}, {}
  for t in targets:
    parts = [(ad, w) for ad, w in zip(adapters, weights) if t in ad.a]
    a[t] = jnp.concatenate([ad.a[t] * (w * ad.scale) for ad, w in parts], axis=-1)
    b[t] = jnp.concatenate([ad.b[t] for ad, _ in parts], axis=-2)
  meta = {"base_fingerprint": fps.pop()} if fps else {}
  meta["composition"] = json.dumps([{"weight": float(w), "source": ad.metadata.get("source_hash")}
                                    for ad, w in zip(adapters, weights)])
  return Adapter.from_factors(a, b, 1.0, **meta)
