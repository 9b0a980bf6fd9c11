"""Our adapter format: a directory with adapter.safetensors + adapter.json, written atomically.

adapter.safetensors holds `{target}.a` [L, d_in, r] and `{target}.b` [L, r, d_out];
adapter.json holds the format version, rank, scale, targets, layer count and provenance
(base fingerprint, source text hash, producer). Reading validates everything before any
array reaches a device. `Adapter.save` / `Adapter.load` are the public entry points; this
module deals in factor dicts, so it does not import the `Adapter` type.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from lskill_jax.backbone.model import TARGETS
from lskill_jax.io import atomic_dir
from lskill_jax.weights.safetensors_file import CorruptFileError, SafetensorsFile, save_file

FORMAT = "lskill_jax.adapter"
VERSION = 1
WEIGHTS, CONFIG = "adapter.safetensors", "adapter.json"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# ΔW = scale·A·B is added to weights of order 1; a larger factor means a corrupt or mistyped
# file, and would overflow float32 activations.
MAX_SCALE = 1e6


class AdapterFileError(ValueError):
  """An adapter directory is incomplete, corrupt, or does not describe its tensors."""


def save(adapter, path: str) -> None:
  """Writes the adapter directory atomically (a crash leaves the old one, or none)."""
  if adapter.batched:
    raise ValueError("save one adapter at a time (use adapter.row(i) on a per-row stack).")
  tensors = {}
  for t in adapter.targets:
    tensors[f"{t}.a"] = np.asarray(adapter.a[t])
    tensors[f"{t}.b"] = np.asarray(adapter.b[t])
  config = {"format": FORMAT, "version": VERSION, "rank": adapter.rank, "scale": adapter.scale,
            "targets": list(adapter.targets), "num_layers": adapter.num_layers,
            "dtype": str(tensors[f"{adapter.targets[0]}.a"].dtype),
            "metadata": adapter.metadata}
  with atomic_dir(path) as tmp:
    save_file(tensors, os.path.join(tmp, WEIGHTS), metadata={"format": FORMAT})
    with open(os.path.join(tmp, CONFIG), "w") as f:
      json.dump(config, f, indent=1, sort_keys=True)


def _read_config(path: str) -> dict:
  cfg_path = os.path.join(path, CONFIG)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no adapter directory at {path!r}.")
  if not os.path.isfile(cfg_path):
    hint = " It looks like a PEFT adapter: use Adapter.from_peft." if os.path.isfile(
        os.path.join(path, "adapter_config.json")) else ""
    raise AdapterFileError(f"{path}: missing {CONFIG}.{hint}")
  try:
    with open(cfg_path) as f:
      cfg = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise AdapterFileError(f"{cfg_path}: not valid JSON ({e}); the file is corrupt.") from None
  if not isinstance(cfg, dict):
    raise AdapterFileError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}.")
  if cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
    raise AdapterFileError(f"{cfg_path}: format {cfg.get('format')!r} v{cfg.get('version')} is not "
                           f"{FORMAT!r} v{VERSION}.")
  for key in ("rank", "scale", "targets", "num_layers"):
    if key not in cfg:
      raise AdapterFileError(f"{cfg_path}: missing field {key!r}.")
  for key in ("rank", "num_layers"):
    if type(cfg[key]) is not int or cfg[key] < 1:
      raise AdapterFileError(f"{cfg_path}: {key} must be a positive integer, got {cfg[key]!r}.")
  scale = cfg["scale"]
  if type(scale) not in (int, float) or not math.isfinite(scale) or abs(scale) > MAX_SCALE:
    raise AdapterFileError(f"{cfg_path}: scale must be a finite number of magnitude at most "
                           f"{MAX_SCALE:g}, got {scale!r}.")
  targets = cfg["targets"]
  if not isinstance(targets, list) or not targets or len(set(map(str, targets))) != len(targets) \
      or any(t not in TARGETS for t in targets):
    raise AdapterFileError(f"{cfg_path}: targets {targets!r} must be a non-empty list of distinct "
                           f"names from {list(TARGETS)}.")
  meta = cfg.setdefault("metadata", {})
  if not isinstance(meta, dict):
    raise AdapterFileError(f"{cfg_path}: metadata must be a JSON object, got {type(meta).__name__}.")
  return cfg


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, dict]:
  """Reads and validates an adapter directory: (A factors, B factors, scale, metadata).

  Refuses unknown or missing tensors, shapes that disagree with adapter.json, non-finite
  values, and truncated or corrupt files (`Adapter.load` also checks the fit to a backbone).
  """
  cfg = _read_config(path)
  try:
    weights = SafetensorsFile(os.path.join(path, WEIGHTS))
  except FileNotFoundError:
    raise AdapterFileError(f"{path}: missing {WEIGHTS}.") from None
  except CorruptFileError as e:
    raise AdapterFileError(str(e)) from None
  expected = {f"{t}.{ab}" for t in cfg["targets"] for ab in "ab"}
  found = set(weights.keys())
  if found != expected:
    raise AdapterFileError(
        f"{path}: tensors do not match the targets {cfg['targets']} in {CONFIG}: "
        f"unknown {sorted(found - expected)}, missing {sorted(expected - found)}.")
  L, r = cfg["num_layers"], cfg["rank"]
  a, b = {}, {}
  for t in cfg["targets"]:
    ta, tb = weights.read(f"{t}.a"), weights.read(f"{t}.b")
    if ta.ndim != 3 or tb.ndim != 3 or ta.shape[0] != L or tb.shape[0] != L or \
        ta.shape[2] != r or tb.shape[1] != r:
      raise AdapterFileError(f"{path}: {t}.a {list(ta.shape)} / {t}.b {list(tb.shape)} disagree with "
                             f"num_layers={L}, rank={r} in {CONFIG}.")
    for name, x in ((f"{t}.a", ta), (f"{t}.b", tb)):
      if x.dtype.name not in FLOAT_DTYPES:
        raise AdapterFileError(f"{path}: tensor {name} has dtype {x.dtype.name}; adapter factors "
                               f"are floating point ({', '.join(FLOAT_DTYPES)}).")
      if not np.all(np.isfinite(x)):
        raise AdapterFileError(f"{path}: tensor {name} holds NaN or inf values; refusing to mount it.")
    a[t], b[t] = np.array(ta), np.array(tb)
  return a, b, float(cfg["scale"]), cfg["metadata"]
