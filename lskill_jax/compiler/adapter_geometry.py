"""The geometry of compiled adapters (DESIGN §6): distances between their updates, a 2-D map,
and a labelled scatter plot. (Not the compiler's memory-slot layout: that is `geometry.py`.)

An adapter's update is ΔW = s·A·B for every target and layer, [d_in, d_out] each; two adapters
are compared as the vectors of all their ΔW, through the small factors only:

    ⟨s1·A1·B1, s2·A2·B2⟩_F = s1·s2 · trace((A1ᵀA2)(B2B1ᵀ))
    ‖ΔW1 − ΔW2‖_F² = ‖ΔW1‖² + ‖ΔW2‖² − 2⟨ΔW1, ΔW2⟩

so no [d_in, d_out] matrix is ever formed. The scale s is included (the update mounted at
α = 1); scale adapters with `Adapter.scaled(α)` to compare other coefficients.

    D = distance_matrix(adapters)          # [N, N]
    xy = classical_mds(D)                  # [N, 2]
    scatter_plot(path, xy, labels, groups)
"""

from __future__ import annotations

import io
from typing import Iterable, Sequence

import numpy as np

from lskill_jax.adapter.adapter import TARGETS, Adapter
from lskill_jax.io import atomic_write_bytes


def _check(adapters: Sequence[Adapter]) -> None:
  if not adapters:
    raise ValueError("adapter geometry needs at least one adapter.")
  if any(ad.batched for ad in adapters):
    raise ValueError("adapter geometry takes shared adapters; pick rows with Adapter.row(i).")
  layers = {ad.num_layers for ad in adapters}
  if len(layers) > 1:
    raise ValueError(f"adapters with different layer counts {sorted(layers)} cannot be compared.")


def gram_by_target(adapters: Sequence[Adapter]) -> dict[str, np.ndarray]:
  """Target -> [L, N, N]: ⟨ΔW_i, ΔW_j⟩ of every layer (float64; 0 where one lacks the target).

  All adapters' factors are concatenated along rank (each A scaled by its s), so one pair of
  [R, R] Gram matrices per layer gives every pair's trace((AiᵀAj)(BjBiᵀ)) as a block sum.
  """
  _check(adapters)
  L = adapters[0].num_layers
  out = {}
  for t in [t for t in TARGETS if any(t in ad.a for ad in adapters)]:
    have = [i for i, ad in enumerate(adapters) if t in ad.a]
    ranks = [adapters[i].a[t].shape[-1] for i in have]
    owner = np.zeros((sum(ranks), len(adapters)))                    # [R, N] one-hot
    owner[np.arange(sum(ranks)), np.repeat(have, ranks)] = 1.0
    grams = np.zeros((L, len(adapters), len(adapters)))
    for l in range(L):  # a layer at a time: host memory stays at one layer's factors
      a = np.concatenate([np.asarray(adapters[i].a[t][l], np.float64) * adapters[i].scale
                          for i in have], axis=-1)                    # [d_in, R]
      b = np.concatenate([np.asarray(adapters[i].b[t][l], np.float64) for i in have],
                         axis=0)                                      # [R, d_out]
      ga, gb = a.T @ a, b @ b.T                                       # [R, R]: AᵀA, BBᵀ
      # trace((AiᵀAj)(BjBiᵀ)) = Σ_{p∈i, q∈j} ga[p, q] · gb[q, p]
      grams[l] = owner.T @ (ga * gb.T) @ owner
    out[t] = (grams + np.swapaxes(grams, -1, -2)) / 2  # exact symmetry against rounding
  return out


def gram_matrix(adapters: Sequence[Adapter], targets: Iterable[str] | None = None,
                layers: Iterable[int] | None = None) -> np.ndarray:
  """[N, N] inner products of the adapters' whole updates (optionally some targets/layers)."""
  by_target = gram_by_target(adapters)
  keep = list(by_target) if targets is None else [t for t in targets if t in by_target]
  idx = slice(None) if layers is None else np.asarray(list(layers), int)
  n = len(adapters)
  return sum((by_target[t][idx].sum(0) for t in keep), np.zeros((n, n)))


def distances_from_gram(gram: np.ndarray) -> np.ndarray:
  """[N, N] Euclidean distances ‖x_i − x_j‖ from inner products ⟨x_i, x_j⟩."""
  sq = np.diag(gram)
  d2 = sq[:, None] + sq[None, :] - 2.0 * gram
  d = np.sqrt(np.maximum(d2, 0.0))  # cancellation can leave tiny negatives for near-equal pairs
  np.fill_diagonal(d, 0.0)
  return d


def distance_matrix(adapters: Sequence[Adapter], targets: Iterable[str] | None = None,
                    layers: Iterable[int] | None = None) -> np.ndarray:
  """[N, N] Frobenius distances ‖ΔW_i − ΔW_j‖ over all (or the given) targets and layers."""
  return distances_from_gram(gram_matrix(adapters, targets, layers))


def cosine_matrix(adapters: Sequence[Adapter], targets: Iterable[str] | None = None,
                  layers: Iterable[int] | None = None) -> np.ndarray:
  """[N, N] cosine similarities of the updates (0 for an all-zero adapter)."""
  g = gram_matrix(adapters, targets, layers)
  norm = np.sqrt(np.maximum(np.diag(g), 0.0))
  denom = norm[:, None] * norm[None, :]
  return np.where(denom > 0, g / np.where(denom > 0, denom, 1.0), 0.0)


def classical_mds(dist: np.ndarray, dims: int = 2) -> np.ndarray:
  """[N, dims] coordinates whose distances approximate `dist` [N, N] (Torgerson's MDS).

  For Euclidean distances such as `distance_matrix`'s this is exact up to the dropped
  dimensions: the projection of the ΔW vectors on their top principal axes. Deterministic;
  each axis is signed so that its largest coordinate is positive.
  """
  d = np.asarray(dist, np.float64)
  if d.ndim != 2 or d.shape[0] != d.shape[1]:
    raise ValueError(f"MDS needs a square distance matrix, got shape {d.shape}.")
  n = d.shape[0]
  center = np.eye(n) - 1.0 / n
  b = -0.5 * center @ (d ** 2) @ center
  vals, vecs = np.linalg.eigh((b + b.T) / 2)
  order = np.argsort(vals)[::-1][:dims]
  coords = vecs[:, order] * np.sqrt(np.maximum(vals[order], 0.0))
  if coords.shape[1] < dims:  # fewer points than dimensions
    coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
  flip = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(dims)])
  return coords * np.where(flip == 0, 1.0, flip)


def scatter_plot(path: str, coords: np.ndarray, labels: Sequence[str],
                 groups: Sequence[str] | None = None, title: str = "") -> None:
  """Writes a PNG of 2-D points [N, 2], each labelled, coloured by group (with a legend).

  Drawn on a figure of its own (no pyplot state, any matplotlib backend setting left alone)
  and written atomically.
  """
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  coords = np.asarray(coords, np.float64)
  if coords.ndim != 2 or coords.shape[1] != 2 or len(labels) != len(coords):
    raise ValueError(f"need [N, 2] coordinates and N labels; got {coords.shape} and "
                     f"{len(labels)} labels.")
  groups = list(groups) if groups is not None else [""] * len(coords)
  fig = Figure(figsize=(7, 6), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  palette = matplotlib.colormaps["tab10"]
  for k, g in enumerate(dict.fromkeys(groups)):
    pts = np.array([i for i, gi in enumerate(groups) if gi == g])
    ax.scatter(coords[pts, 0], coords[pts, 1], color=palette(k % 10), label=g or None, s=28)
  for (x, y), label in zip(coords, labels):
    ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
  if any(groups):
    ax.legend(fontsize=8, loc="best")
  ax.set_xlabel("MDS 1")
  ax.set_ylabel("MDS 2")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  atomic_write_bytes(path, buf.getvalue())


__all__ = ["classical_mds", "cosine_matrix", "distance_matrix", "distances_from_gram",
           "gram_by_target", "gram_matrix", "scatter_plot"]
