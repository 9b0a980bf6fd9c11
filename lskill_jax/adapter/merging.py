"""Merged weights (W + α·s·A·B) for single-skill serving, and merged HF checkpoint export."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax.backbone.config import to_hf_config
from lskill_jax.backbone.loading import Backbone, hf_key_map
from lskill_jax.io import atomic_dir
from lskill_jax.sharding import to_host
from lskill_jax.weights.safetensors_file import save_file


@jax.jit
def _merge_layers(layers, a, b, coef):
  out = dict(layers)
  for t in a:
    w = layers[t]
    delta = jnp.einsum("lir,lro->lio", a[t].astype(jnp.float32), b[t].astype(jnp.float32))
    out[t] = (w.astype(jnp.float32) + coef * delta).astype(w.dtype)
  return out


def merge(bb: Backbone, adapter, alpha: float = 1.0) -> Backbone:
  """A backbone whose projections include the `Adapter`'s update; runs at base-model speed."""
  adapter.check_fits(bb.config)
  if adapter.batched:
    raise ValueError("only a shared adapter can be merged; per-row adapters stay unmerged.")
  params = dict(bb.params)
  layers = _merge_layers(bb.params["layers"], adapter.a, adapter.b,
                         jnp.float32(alpha * adapter.scale))
  layers = jax.device_put(layers, jax.tree.map(lambda x: x.sharding, bb.params["layers"]))
  params["layers"] = layers
  return dataclasses.replace(bb, params=params)


def export_hf(bb: Backbone, path: str, max_shard_bytes: int = 2 << 30) -> None:
  """Writes a transformers checkpoint (config, sharded safetensors + index, tokenizer)."""
  cfg = bb.config
  tensors: dict[str, np.ndarray] = {}
  for p, (key, transpose) in hf_key_map(cfg).items():
    leaf = bb.params
    for k in p:
      leaf = leaf[k]
    arr = to_host(leaf)
    if arr.dtype not in (np.float32, np.float16) and arr.dtype.name != "bfloat16":
      arr = arr.astype(np.float32)
    if p[0] == "layers":
      for i in range(cfg.num_layers):
        tensors[key.format(i=i)] = np.ascontiguousarray(arr[i].T if transpose else arr[i])
    else:
      tensors[key] = np.ascontiguousarray(arr.T if transpose else arr)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for k in sorted(tensors):
    if shards[-1] and size + tensors[k].nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][k] = tensors[k]
    size += tensors[k].nbytes
  hf_cfg = to_hf_config(cfg)
  hf_cfg["dtype"] = str(next(iter(tensors.values())).dtype)
  with atomic_dir(path) as tmp:
    weight_map = {}
    n = len(shards)
    for i, shard in enumerate(shards):
      name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
      save_file(shard, os.path.join(tmp, name), metadata={"format": "pt"})
      weight_map.update({k: name for k in shard})
    if n > 1:
      total = sum(t.nbytes for t in tensors.values())
      with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_cfg, f, indent=1)
    if bb.tokenizer is not None:
      bb.tokenizer.save_pretrained(tmp)
