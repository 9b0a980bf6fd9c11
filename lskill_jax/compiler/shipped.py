"""Trained compilers that ship with the package, and the single-file format they ship in.

A shipped compiler is a directory holding `compiler.json` (the spec and the base model's
fingerprint, as any compiler checkpoint), `params.safetensors` (every leaf under its
'/'-joined pytree path, stored in bfloat16 by default) and `card.md` (how it was trained and
what it measured). `SkillCompiler.pretrained(bb)` finds the one trained for `bb`'s weights:

    bb = lsj.load_backbone("smollm2-135m")
    comp = lsj.SkillCompiler.pretrained(bb)

The fingerprint, not the model's name, decides: SmolLM2 loaded from a transformers directory
gets the same compiler as the embedded copy.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import ml_dtypes
import numpy as np

from lskill_jax.adapter.adapter import base_fingerprint
from lskill_jax.compiler import checkpoint as ckpt
from lskill_jax.io import atomic_dir
from lskill_jax.sharding import to_host
from lskill_jax.weights.safetensors_file import SafetensorsFile, save_file

SHIPPED_DIR = os.path.join(os.path.dirname(__file__), "shipped")
PARAMS_FILE = ckpt.PARAMS_FILE
CARD_FILE = "card.md"
_STORAGE = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
# Kept in float32 whatever the storage dtype: the standardisation statistics are subtracted
# from memory states of magnitude ~100 whose document-dependent part is a few units, which
# bfloat16's three significant digits would swamp.
FULL_PRECISION = ("state_stats/",)


class NoShippedCompilerError(ckpt.CheckpointError):
  """No compiler trained for this backbone ships with the package."""


def _key(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def flatten(params) -> dict[str, np.ndarray]:
  """{'generator/layers/0/wq': array, ...}: one entry per leaf, keyed by its dict path."""
  return {_key(path): to_host(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def stored(flat: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
  """`flat` as it is stored at `dtype` (FULL_PRECISION leaves and integers untouched)."""
  if dtype not in _STORAGE:
    raise ValueError(f"dtype must be one of {sorted(_STORAGE)}, got {dtype!r}.")
  return {k: v.astype(_STORAGE[dtype]) if np.issubdtype(v.dtype, np.floating)
          and not k.startswith(FULL_PRECISION) else v for k, v in flat.items()}


def unflatten(flat: dict[str, np.ndarray], abstract, where: str):
  """The pytree of `abstract`'s structure filled from `flat` (cast to each leaf's dtype)."""
  expected = flatten(jax.tree.map(lambda s: np.zeros((), s.dtype), abstract))
  missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
  if missing or extra:
    raise ckpt.CheckpointError(
        f"{where}: tensors do not match the compiler spec (missing {missing[:5]}, unexpected "
        f"{extra[:5]}); the file was written for another compiler configuration.")
  values = []
  for path, s in jax.tree_util.tree_leaves_with_path(abstract):
    key = _key(path)
    v = flat[key]
    if tuple(v.shape) != tuple(s.shape):
      raise ckpt.CheckpointError(f"{where}: tensor {key!r} has shape {tuple(v.shape)}, the spec "
                                 f"needs {tuple(s.shape)}.")
    values.append(np.asarray(v, dtype=s.dtype))
  return jax.tree.unflatten(jax.tree.structure(abstract), values)


def export(compiler, out_dir: str, *, dtype: str = "bfloat16", card: str | None = None) -> str:
  """Writes `compiler` as a single-file compiler directory (atomically); returns its path.

  dtype: storage precision of the params ("bfloat16" halves the size; loading casts back to
  the spec's float32); FULL_PRECISION leaves stay float32. `card`: Markdown saved beside it (provenance and measured figures).
  """
  flat = stored(flatten(compiler.params), dtype)
  with atomic_dir(out_dir) as tmp:
    ckpt.write_spec(tmp, compiler.spec, base_fingerprint(compiler.backbone.config), compiler.backbone.source)
    save_file(flat, os.path.join(tmp, PARAMS_FILE), metadata={"format": ckpt.FORMAT,
                                                               "storage_dtype": dtype})
    if card is not None:
      with open(os.path.join(tmp, CARD_FILE), "w") as f:
        f.write(card)
  return out_dir


def read_params(file: str, abstract):
  """Params from a compiler's params.safetensors, shaped and typed as `abstract`."""
  try:
    st = SafetensorsFile(file)
    flat = dict(st.items())
  except (OSError, ValueError) as e:
    raise ckpt.CheckpointError(f"{file}: cannot read the compiler's params ({e}).") from None
  return unflatten(flat, abstract, file)


def load_params(params_path: str, abstract, shardings):
  """Params placed on `shardings` from what `checkpoint.find` returns: a params.safetensors file
  (the shipped layout) or an Orbax params directory (a training run's step)."""
  if params_path.endswith(".safetensors"):
    return jax.device_put(read_params(params_path, abstract), shardings)
  return ckpt.restore_params(params_path, ckpt.abstract_like(abstract, shardings))


def available() -> dict[str, str]:
  """{base fingerprint: directory} of the compilers shipped with the package."""
  out = {}
  for spec_path in sorted(glob.glob(os.path.join(SHIPPED_DIR, "*", ckpt.SPEC_FILE))):
    with open(spec_path) as f:
      out[json.load(f)["base_fingerprint"]] = os.path.dirname(spec_path)
  return out


def find_for(backbone) -> str:
  """Directory of the shipped compiler trained for `backbone`'s weights, or a clear error."""
  fp = base_fingerprint(backbone.config)
  shipped = available()
  if fp not in shipped:
    names = ", ".join(os.path.basename(p) for p in shipped.values()) or "none"
    raise NoShippedCompilerError(
        f"no trained compiler ships for backbone {backbone.source!r} (fingerprint {fp}); "
        f"shipped: {names}. Train one (python -m launch.train --config=configs/<name>.py "
        "--workdir=DIR) and pass its directory (--compiler=DIR or SkillCompiler.load(DIR, bb)), "
        "or pass a configs/<name>.py file for an untrained compiler.")
  return shipped[fp]
