"""Adapter geometry: factor-based ΔW distances against dense ones, MDS, the scatter plot."""

import itertools

import numpy as np
import pytest

import lskill_jax as lsj
from configs import tiny
from lskill_jax.compiler import adapter_geometry as geo


@pytest.fixture(scope="module")
def cfg():
  return lsj.backbone_from_config(tiny.get_config()).config


def _adapter(cfg, seed, rank, scale, targets=None):
  rng = np.random.RandomState(seed)
  shapes, L = cfg.projection_shapes(), cfg.num_layers
  targets = targets or list(shapes)
  return lsj.Adapter.from_factors(
      {t: rng.randn(L, shapes[t][0], rank).astype(np.float32) for t in targets},
      {t: rng.randn(L, rank, shapes[t][1]).astype(np.float32) for t in targets}, scale)


@pytest.fixture(scope="module")
def adapters(cfg):
  a = [_adapter(cfg, 0, 2, 0.5), _adapter(cfg, 1, 3, 1.0),
       _adapter(cfg, 2, 2, 2.0, targets=["q", "down"])]
  a.append(lsj.weighted_sum([a[0], a[1]], [1.0, -0.5]))  # rank 5, scale folded in
  return a


def _flat(ad, cfg, targets=None, layers=None):
  """The whole dense update as one vector (zeros for a missing target)."""
  shapes = cfg.projection_shapes()
  parts = []
  for t in targets or list(shapes):
    for l in (range(cfg.num_layers) if layers is None else layers):
      parts.append((ad.delta(t, l) if t in ad.a else np.zeros(shapes[t])).ravel())
  return np.concatenate(parts)


def test_factor_distances_match_dense(cfg, adapters):
  flat = [_flat(ad, cfg) for ad in adapters]
  dense = np.array([[np.linalg.norm(x - y) for y in flat] for x in flat])
  got = geo.distance_matrix(adapters)
  np.testing.assert_allclose(got, dense, rtol=1e-5)
  assert np.all(np.diag(got) == 0.0) and np.array_equal(got, got.T)
  gram = np.array([[x @ y for y in flat] for x in flat])
  np.testing.assert_allclose(geo.gram_matrix(adapters), gram, rtol=1e-5, atol=1e-6 * gram.max())
  cos = geo.cosine_matrix(adapters)
  np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-9)


def test_restricted_to_targets_and_layers(cfg, adapters):
  flat = [_flat(ad, cfg, targets=["q", "up"], layers=[1]) for ad in adapters]
  dense = np.array([[np.linalg.norm(x - y) for y in flat] for x in flat])
  np.testing.assert_allclose(geo.distance_matrix(adapters, targets=["q", "up"], layers=[1]),
                             dense, rtol=1e-5)
  by_target = geo.gram_by_target(adapters)
  assert set(by_target) == set(adapters[0].targets)
  assert by_target["k"].shape == (cfg.num_layers, 4, 4) and np.all(by_target["k"][:, 2] == 0)


def test_self_distance_is_zero(cfg, adapters):
  again = adapters[1].scaled(1.0)  # a different object holding the same update
  d = geo.distance_matrix([adapters[1], again, adapters[1].scaled(2.0)])
  assert d[0, 0] == 0.0 and d[0, 1] <= 1e-6 * d[0, 2]  # rounding only
  np.testing.assert_allclose(d[0, 2], np.linalg.norm(_flat(adapters[1], cfg)), rtol=1e-5)
  with pytest.raises(ValueError, match="shared adapters"):
    geo.distance_matrix([lsj.Adapter.stack(adapters[:2])])


def test_mds_preserves_the_order_of_distances():
  # An irregular quadrilateral in the plane: MDS must recover it up to rotation/reflection.
  points = np.array([[0.0, 0.0], [4.0, 0.0], [1.0, 3.0], [5.0, 5.0]])
  dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
  xy = geo.classical_mds(dist)
  got = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  pairs = list(itertools.combinations(range(4), 2))
  assert sorted(pairs, key=lambda p: dist[p]) == sorted(pairs, key=lambda p: got[p])
  np.testing.assert_allclose(got, dist, atol=1e-9)
  np.testing.assert_array_equal(geo.classical_mds(dist), xy)  # deterministic
  assert geo.classical_mds(dist[:1, :1]).shape == (1, 2)


def test_scatter_plot_writes_a_png(tmp_path, cfg, adapters):
  xy = geo.classical_mds(geo.distance_matrix(adapters))
  path = tmp_path / "plots" / "geometry.png"
  geo.scatter_plot(str(path), xy, ["look", "pick", "q+down", "look-pick/2"],
                   groups=["skill", "skill", "component", "composed"], title="adapters")
  data = path.read_bytes()
  assert data.startswith(b"\x89PNG") and len(data) > 1000
  assert [p.name for p in path.parent.iterdir()] == ["geometry.png"]  # no temp file left
  with pytest.raises(ValueError, match="coordinates"):
    geo.scatter_plot(str(path), xy, ["a"])
