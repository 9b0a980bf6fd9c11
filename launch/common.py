"""Flags and set-up shared by the launch scripts (multi-host init, mesh from flags), and `run`:
`app.run` with one-line errors (exit code 2) for bad input instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn

from absl import app, flags, logging
import jax

from lskill_jax import sharding
from lskill_jax.adapter.adapter import AdapterMismatchError
from lskill_jax.adapter.files import AdapterFileError
from lskill_jax.agents.accounting import PromptBlockError
from lskill_jax.agents.skills import SkillError
from lskill_jax.backbone.config import UnsupportedConfigError
from lskill_jax.backbone.loading import WeightMismatchError
from lskill_jax.compiler.checkpoint import CheckpointError
from lskill_jax.data.documents import DocumentError
from lskill_jax.data.records import DataError
from lskill_jax.inference import PromptError, TokenRangeError
from lskill_jax.io import JSONLError
from lskill_jax.training.run_config import ConfigError
from lskill_jax.training.trainer import NonFiniteLossError
from lskill_jax.weights.safetensors_file import CorruptFileError

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first: one process per host, the same "
                  "command on every host. On TPU VMs, Slurm and Open MPI the coordinator and "
                  "process ids come from the environment; elsewhere pass the three flags below.")
flags.DEFINE_string("coordinator_address", "",
                    "With --distributed: host:port of process 0 (default: from the environment, "
                    "or $JAX_COORDINATOR_ADDRESS), e.g. 10.0.0.2:8476.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes "
                     "(default: from the environment).", lower_bound=1)
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index, 0 to "
                     "num_processes-1 (default: from the environment).", lower_bound=0)
flags.DEFINE_string("mesh", "", "Device mesh as 'data=D,fsdp=F,tensor=T' (one may be -1); "
                    "empty = no mesh (single device).")

FLAGS = flags.FLAGS


def init_distributed() -> None:
  """jax.distributed.initialize() once, when --distributed is given (before any JAX work)."""
  given = [f"--{n}" for n in ("coordinator_address", "num_processes", "process_id")
           if FLAGS[n].present]
  if not FLAGS.distributed:
    if given:
      raise flags.ValidationError(f"{', '.join(given)} only apply with --distributed; add it.")
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(FLAGS.coordinator_address or None, FLAGS.num_processes,
                             FLAGS.process_id)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def init_runtime():
  """Multi-host initialisation when asked for; returns the mesh requested by --mesh (or None)."""
  init_distributed()
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


# Errors that mean bad input, a bad config or a missing file (not a bug in this code).
_EXPECTED_ERRORS = (OSError, flags.Error, AdapterMismatchError, AdapterFileError,
                    PromptBlockError, SkillError, UnsupportedConfigError, WeightMismatchError,
                    CorruptFileError, CheckpointError, DocumentError, DataError, JSONLError,
                    PromptError, TokenRangeError, ConfigError, NonFiniteLossError)


def fail(message: str) -> NoReturn:
  """One line on stderr naming the problem (and its fix), exit code 2."""
  print("error: " + " ".join(line.strip() for line in str(message).splitlines() if line.strip()),
        file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(f"{e}. Pass --helpshort to see the flags.")
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for a --config.X=Y override of a field the config lacks,
    # the message (a KeyError's, possibly wrapped) being the key and a did-you-mean line.
    text = e
    while isinstance(text, BaseException) and text.args:
      text = text.args[0]
    lines = str(text).splitlines()
    missing = lines[0].strip("'\"") if lines else ""
    given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    culprit = [a for a in given if missing in a[len("--config."):].split(".")]
    if not culprit:
      raise  # not an override: a bug in the config file itself
    fail(f"{culprit[0]}: the config has no field {missing!r}. {' '.join(lines[1:])} "
         "Overrides can only set fields the config file defines.")


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)`, except that an expected error (bad flags, config overrides, data, files)
  ends with one line on stderr and exit code 2; anything else keeps its traceback (a bug)."""
  def guarded(argv):
    try:
      # Every script, also those without a mesh, joins the job first: jax.distributed must
      # start before the first JAX computation.
      init_distributed()
      return main(argv)
    except Exception as e:  # sorted here: expected errors become one line, others re-raise
      if isinstance(e, _EXPECTED_ERRORS):
        fail(str(e))
      raise
  app.run(guarded, flags_parser=_parse_flags)
