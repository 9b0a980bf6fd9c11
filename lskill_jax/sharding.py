"""The one place that defines the device mesh and the logical-axis rules.

Every array in the project names its dimensions with logical axes ("batch", "embed",
"mlp", ...). `RULES` maps each logical axis to mesh axes; `spec_for` turns a tuple of
logical axes into a PartitionSpec for a concrete shape, dropping a mesh axis when the
dimension is not divisible by it or when an earlier dimension already uses it (so tiny
test shapes and per-row adapter stacks shard without special cases).

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel + parameter sharding),
`tensor` (heads / MLP / vocab).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (tried in order; see `spec_for`).
RULES: dict[str, tuple[str, ...]] = {
    # activations and per-example arrays
    "batch": ("data", "fsdp"),
    "act_seq": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    # parameters
    "layers": (),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": (),
    "norm": (),
    # LoRA rank is never sharded: it is tiny and contracted immediately.
    "lora_rank": (),
    # compiler (hypernetwork) activations
    "memory": (),
}

Logical = Sequence[str | None]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError("at most one mesh axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh sizes {sizes}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
        f"{math.prod(sizes)} devices, but {len(devices)} are available.")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def mesh_or_default(*meshes: Mesh | None) -> Mesh:
  """The first of `meshes` that is not None; without one, a one-device mesh on this process's
  first device: the device a plain `jax.jit` runs on, so results are those of an unsharded run."""
  for mesh in meshes:
    if mesh is not None:
      return mesh
  return make_mesh(1, 1, 1, devices=jax.local_devices()[:1])


def spec_for(logical: Logical, shape: Sequence[int], mesh_shape: dict[str, int]) -> P:
  """PartitionSpec for an array of `shape` whose dimensions have the given logical names."""
  if len(logical) != len(shape):
    raise ValueError(f"logical axes {tuple(logical)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  out = []
  for name, dim in zip(logical, shape):
    chosen = []
    size = 1
    for ax in RULES.get(name, ()) if name else ():
      n = mesh_shape.get(ax, 1)
      if ax in used or n == 1 or dim % (size * n):
        continue
      chosen.append(ax)
      size *= n
    used.update(chosen)
    out.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  return P(*out)


def named_sharding(mesh: Mesh, logical: Logical, shape: Sequence[int]) -> NamedSharding:
  return NamedSharding(mesh, spec_for(logical, shape, dict(mesh.shape)))


def tree_shardings(mesh: Mesh, logical_tree: Any, shape_tree: Any) -> Any:
  """NamedShardings for a pytree, given a matching pytree of logical-axis tuples."""
  return jax.tree.map(lambda lg, x: named_sharding(mesh, lg, np.shape(x)),
                      logical_tree, shape_tree, is_leaf=is_logical)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put(x, mesh: Mesh, logical: Logical) -> jax.Array:
  """Host value -> device array placed with the sharding its logical axes give on `mesh`."""
  x = jnp.asarray(x)
  return jax.device_put(x, named_sharding(mesh, logical, x.shape))


def constrain(x: jax.Array, logical: Logical) -> jax.Array:
  """Sharding constraint by logical axes under the active mesh; a no-op without one (or on a
  one-device mesh, where there is nothing to split)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, spec_for(logical, x.shape, dict(mesh.shape)))


def constrain_outputs(tree: Any, logical_tree: Any, replicate: bool = False) -> Any:
  """`constrain` for the outputs of a jitted function, given a matching tree of logical axes.

  replicate: every output whole on every device instead, for a mesh that spans several
  processes whose callers read the outputs on the host (a process reads only what it holds).
  """
  if replicate:
    logical_tree = jax.tree.map(lambda x: (None,) * np.ndim(x), tree)
  return jax.tree.map(lambda lg, x: constrain(x, lg), logical_tree, tree, is_leaf=is_logical)


def process_rows(sharding: jax.sharding.Sharding, shape: Sequence[int]) -> tuple[int, ...]:
  """Indices of the rows of a global array of `shape` that this process's devices hold.

  A per-host input pipeline reads exactly these rows of each global batch, in this order, and
  `jax.make_array_from_process_local_data` places them (it maps a process's row blocks, in
  order, onto its local data).
  """
  n = shape[0]
  rows: set[int] = set()
  for idx in sharding.addressable_devices_indices_map(tuple(shape)).values():
    rows.update(range(*idx[0].indices(n)))
  return tuple(sorted(rows))


def to_host(x: jax.Array) -> np.ndarray:
  """The whole value of an array on this host, also one spread over several processes
  (gathered from them: every process must call this for the same arrays, in the same order)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def is_logical(x) -> bool:
  """True for a tuple of logical axis names (a leaf of a logical-axes tree)."""
  return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
