"""Calling pure functions under jit with explicit shardings, compiled once per signature.

`put` places a host array with the sharding its logical axes give on the mesh; `call` jits a
function with the committed shardings of its arguments as in_shardings and the shardings
of `out_logical` as out_shardings, and runs it under the mesh (so `sharding.constrain` inside
takes effect). Without a mesh it is a plain jit on the default device. On a mesh that spans
several processes the outputs come back replicated on every device instead: callers read them
on the host (adapters to files, generated tokens), and a process can only read what it holds.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from lskill_jax import sharding as shd


def put(x, mesh: Mesh | None, logical):
  """Host value -> device array, sharded by logical axes when there is a mesh."""
  x = jnp.asarray(x)
  if mesh is None:
    return x
  return jax.device_put(x, shd.named_sharding(mesh, logical, x.shape))


class _Key:
  """A pytree of shardings made hashable, to key the compile cache."""

  def __init__(self, tree):
    self.tree = tree
    leaves, treedef = jax.tree.flatten(tree)
    self._key = (treedef, tuple(leaves))

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _Key) and self._key == other._key


@functools.lru_cache(maxsize=256)
def _jitted(fn: Callable, static: tuple, in_sh: _Key | None, out_sh: _Key | None):
  f = functools.partial(fn, **dict(static))
  if in_sh is None:
    return jax.jit(f)
  return jax.jit(f, in_shardings=in_sh.tree, out_shardings=out_sh.tree)


def call(fn: Callable, mesh: Mesh | None, static: dict, args: tuple,
         out_logical: Any = None, out_shapes: Any = None):
  """fn(*args, **static) under jit; explicit in/out shardings when a mesh is given."""
  static_key = tuple(sorted(static.items()))
  if mesh is None:
    return _jitted(fn, static_key, None, None)(*args)
  in_sh = _Key(jax.tree.map(lambda x: x.sharding, args))
  out = lambda lg, s: (shd.replicated(mesh) if mesh.is_multi_process
                       else shd.named_sharding(mesh, lg, s))
  out_sh = _Key(jax.tree.map(out, out_logical, out_shapes, is_leaf=shd.is_logical))
  with jax.set_mesh(mesh):
    return _jitted(fn, static_key, in_sh, out_sh)(*args)
