"""HF checkpoint directories: config.json plus single or sharded safetensors."""

from __future__ import annotations

import json
import os

import numpy as np

from lskill_jax.weights.safetensors_file import CorruptFileError, SafetensorsFile

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class UnsupportedConfigError(ValueError):
  """A checkpoint's configuration asks for something this port does not implement.

  Raised by the weight readers (a GGUF architecture or tensor) and by
  `backbone.config.from_hf_config` (a config.json field), hence defined below both."""


class TensorSource:
  """Named tensors in HF layout (`model.layers.0.self_attn.q_proj.weight` -> [out, in])."""

  def __init__(self, tensors: dict[str, tuple[SafetensorsFile | None, np.ndarray | None]]):
    self._tensors = tensors

  @classmethod
  def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TensorSource":
    return cls({k: (None, v) for k, v in arrays.items()})

  @classmethod
  def from_files(cls, files: list[SafetensorsFile]) -> "TensorSource":
    tensors = {}
    for f in files:
      for k in f.keys():
        tensors[k] = (f, None)
    return cls(tensors)

  def keys(self) -> list[str]:
    return list(self._tensors)

  def __contains__(self, key: str) -> bool:
    return key in self._tensors

  def shape(self, key: str) -> tuple[int, ...]:
    f, arr = self._tensors[key]
    return tuple(arr.shape) if f is None else f.shape(key)

  def read(self, key: str) -> np.ndarray:
    f, arr = self._tensors[key]
    return arr if f is None else f.read(key)


def read_config(path: str) -> dict:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(
        f"{path} has no config.json; expected a transformers checkpoint directory "
        "(config.json + *.safetensors), a .gguf file, or a known model name.")
  with open(cfg_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise CorruptFileError(f"{cfg_path} is not valid JSON ({e}).") from None


def open_weights(path: str) -> TensorSource:
  """All safetensors of a directory: the index's shards, or the single model.safetensors."""
  index = os.path.join(path, INDEX_NAME)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map", {})
    shard_names = sorted(set(weight_map.values()))
    missing = [s for s in shard_names if not os.path.isfile(os.path.join(path, s))]
    if missing:
      raise FileNotFoundError(f"{path}: shards listed in {INDEX_NAME} are missing: {missing}")
    files = [SafetensorsFile(os.path.join(path, s)) for s in shard_names]
    source = TensorSource.from_files(files)
    absent = [k for k in weight_map if k not in source]
    if absent:
      raise CorruptFileError(f"{path}: {len(absent)} tensors of the index are not in the shards "
                             f"(first: {absent[0]}).")
    return source
  single = os.path.join(path, SINGLE_NAME)
  if os.path.isfile(single):
    return TensorSource.from_files([SafetensorsFile(single)])
  others = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
  if others:
    return TensorSource.from_files([SafetensorsFile(os.path.join(path, n)) for n in others])
  bins = [n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".pth"))]
  hint = (" It holds pickle-based weights, which we never load; convert them with "
          "`model.save_pretrained(dir, safe_serialization=True)`." if bins else "")
  raise FileNotFoundError(f"{path}: no *.safetensors weights found.{hint}")
