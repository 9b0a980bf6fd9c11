"""Compiler checkpoints: `compiler.json` (spec, base fingerprint) + Orbax params.

Layouts accepted by `find`:
  DIR/compiler.json + DIR/params/                       (SkillCompiler.save)
  DIR/compiler.json + DIR/params.safetensors            (single file; see compiler.shipped)
  WORKDIR/compiler.json + WORKDIR/checkpoints/<step>/params/   (a training run; latest step)
and the `checkpoints` folder or a step folder of a training run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp

from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.compiler.hypernet import CompilerSpec
from lskill_jax.io import write_json

FORMAT, VERSION = "lskill_jax.compiler", 1
SPEC_FILE = "compiler.json"
PARAMS_FILE = "params.safetensors"


class CheckpointError(ValueError):
  """A compiler checkpoint is missing, incomplete, or belongs to another backbone."""


def spec_to_json(spec: CompilerSpec) -> dict:
  d = dataclasses.asdict(spec)
  d.pop("backbone")
  d["targets"] = list(spec.targets)
  return d


def spec_differences(theirs: CompilerSpec, ours: CompilerSpec) -> dict[str, tuple[Any, Any]]:
  """{field: (theirs, ours)} for every compiler field that differs between two specs."""
  a, b = spec_to_json(theirs), spec_to_json(ours)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def spec_from_json(d: dict, backbone: BackboneConfig) -> CompilerSpec:
  fields = {f.name for f in dataclasses.fields(CompilerSpec)} - {"backbone"}
  unknown = set(d) - fields
  if unknown:
    raise CheckpointError(f"{SPEC_FILE}: unknown compiler fields {sorted(unknown)}.")
  d = dict(d)
  d["targets"] = tuple(d.get("targets", ()))
  return CompilerSpec(backbone=backbone, **d)


def write_spec(path: str, spec: CompilerSpec, base_fingerprint: str, base_model: str) -> None:
  """Writes compiler.json atomically."""
  blob = {"format": FORMAT, "version": VERSION, "spec": spec_to_json(spec),
          "base_fingerprint": base_fingerprint, "base_model": base_model}
  write_json(os.path.join(path, SPEC_FILE), blob, indent=1)


def latest_step(checkpoints_dir: str) -> int | None:
  steps = [int(n) for n in os.listdir(checkpoints_dir) if re.fullmatch(r"\d+", n)
           and os.path.isdir(os.path.join(checkpoints_dir, n, "params"))]
  return max(steps) if steps else None


def find(path: str) -> tuple[str, str]:
  """(compiler.json path, params: an Orbax dir or a safetensors file) for any accepted layout."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no compiler checkpoint at {path!r}.")
  candidates = [path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))]
  spec_path = next((os.path.join(c, SPEC_FILE) for c in candidates
                    if os.path.isfile(os.path.join(c, SPEC_FILE))), None)
  if spec_path is None:
    raise CheckpointError(f"{path}: no {SPEC_FILE} found; not a compiler checkpoint.")
  if os.path.isdir(os.path.join(path, "params")):
    return spec_path, os.path.join(path, "params")
  if os.path.isfile(os.path.join(path, PARAMS_FILE)):
    return spec_path, os.path.join(path, PARAMS_FILE)
  ckpts = path if os.path.basename(path) == "checkpoints" else os.path.join(path, "checkpoints")
  if os.path.isdir(ckpts):
    step = latest_step(ckpts)
    if step is not None:
      return spec_path, os.path.join(ckpts, str(step), "params")
  raise CheckpointError(f"{path}: {SPEC_FILE} found but no saved params (params/, {PARAMS_FILE} "
                        "or checkpoints/<step>/params).")


def read_spec(spec_path: str) -> dict:
  try:
    with open(spec_path) as f:
      blob = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{spec_path}: not valid JSON ({e}).") from None
  if blob.get("format") != FORMAT:
    raise CheckpointError(f"{spec_path}: format {blob.get('format')!r} is not {FORMAT!r}.")
  return blob


def save_params(params_dir: str, hparams) -> None:
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(params_dir), hparams, force=True)
  ckptr.wait_until_finished()


def restore_params(params_dir: str, abstract):
  """Restores params onto the shardings given by `abstract` (ShapeDtypeStructs)."""
  return ocp.StandardCheckpointer().restore(os.path.abspath(params_dir), abstract)


def abstract_like(tree, shardings=None):
  if shardings is None:
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
