"""Flags and set-up shared by the launch scripts (multi-host init, mesh from flags)."""

from __future__ import annotations

from absl import flags, logging
import jax

from lskill_jax import sharding

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host TPU/GPU jobs; the "
                  "coordinator is discovered from the environment).")
flags.DEFINE_string("mesh", "", "Device mesh as 'data=D,fsdp=F,tensor=T' (one may be -1); "
                    "empty = no mesh (single device).")

FLAGS = flags.FLAGS


def init_runtime():
  """Multi-host initialisation when asked for; returns the mesh requested by --mesh (or None)."""
  if FLAGS.distributed:
    jax.distributed.initialize()
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
  if not FLAGS.mesh:
    return None
  sizes = {}
  for part in FLAGS.mesh.split(","):
    name, _, value = part.partition("=")
    if name.strip() not in sharding.MESH_AXES or not value.strip().lstrip("-").isdigit():
      raise flags.ValidationError(
          f"--mesh={FLAGS.mesh!r}: expected comma-separated axis=size with axes "
          f"{sharding.MESH_AXES}, e.g. 'data=2,fsdp=2,tensor=2'.")
    sizes[name.strip()] = int(value)
  return sharding.make_mesh(**sizes)
