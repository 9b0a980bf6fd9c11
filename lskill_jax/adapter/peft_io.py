"""PEFT (PyTorch) LoRA adapter directories: export ours, import theirs.

PEFT stores `lora_A.weight` [r, d_in] and `lora_B.weight` [d_out, r] per module and scales
by lora_alpha / r (lora_alpha / sqrt(r) with rslora). Export folds α·s into B and writes
lora_alpha = r, so PEFT's own scaling is exactly 1. `Adapter.from_peft` / `Adapter.export_peft`
are the public entry points; this module deals in factor dicts, so it does not import the
`Adapter` type.
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from lskill_jax.adapter.files import MAX_SCALE, AdapterFileError
from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.backbone.model import PROJECTIONS, TARGETS
from lskill_jax.io import atomic_dir
from lskill_jax.weights.safetensors_file import CorruptFileError, SafetensorsFile, save_file

MODULES = {t: p.hf for t, p in PROJECTIONS.items()}
_BY_MODULE = {m.split(".")[1]: t for t, m in MODULES.items()}
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$")


def export_peft(adapter, path: str, backbone, alpha: float = 1.0,
                base_model_name_or_path: str | None = None) -> None:
  """Writes a directory `peft.PeftModel.from_pretrained` loads (adapter_model.safetensors + config)."""
  adapter.check_fits(backbone.config)
  if adapter.batched:
    raise ValueError("export one adapter at a time (adapter.row(i)).")
  coef = alpha * adapter.scale
  tensors = {}
  for t in adapter.targets:
    a = np.asarray(adapter.a[t], np.float32)
    b = np.asarray(adapter.b[t], np.float32) * np.float32(coef)
    for i in range(adapter.num_layers):
      prefix = f"base_model.model.model.layers.{i}.{MODULES[t]}"
      tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
      tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": adapter.rank,
      "lora_alpha": adapter.rank, "use_rslora": False, "lora_dropout": 0.0, "bias": "none",
      "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
      "target_modules": [MODULES[t].split(".")[1] for t in adapter.targets],
      "base_model_name_or_path": base_model_name_or_path or backbone.source or None,
      "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
      "alpha_pattern": {}, "use_dora": False,
  }
  with atomic_dir(path) as tmp:
    save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
      json.dump(config, f, indent=1)


def import_peft(path: str, bcfg: BackboneConfig
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, dict]:
  """Reads a PEFT LoRA directory for a backbone of config `bcfg` (any r and lora_alpha; rslora
  respected): (A factors, B factors, scale, provenance metadata)."""
  cfg_path = os.path.join(path, "adapter_config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path}: no adapter_config.json; not a PEFT adapter directory.")
  with open(cfg_path, "rb") as f:
    try:
      cfg = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise AdapterFileError(f"{cfg_path}: not valid JSON ({e}).") from None
  if not isinstance(cfg, dict):
    raise AdapterFileError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}.")
  if cfg.get("peft_type") != "LORA":
    raise AdapterFileError(f"{path}: peft_type {cfg.get('peft_type')!r}; only LORA adapters import.")
  for flag, what in (("use_dora", "DoRA"), ("rank_pattern", "per-module ranks"),
                     ("alpha_pattern", "per-module alphas"), ("modules_to_save", "modules_to_save")):
    if cfg.get(flag):
      raise AdapterFileError(f"{path}: {what} ({flag}) is not supported.")
  if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
    raise AdapterFileError(f"{path}: LoRA biases are not supported (bias must be 'none').")
  r, lora_alpha = cfg.get("r"), cfg.get("lora_alpha")
  if type(r) is not int or r < 1:
    raise AdapterFileError(f"{cfg_path}: r must be a positive integer (the LoRA rank), got {r!r}.")
  if type(lora_alpha) not in (int, float) or not math.isfinite(lora_alpha):
    raise AdapterFileError(f"{cfg_path}: lora_alpha must be a finite number, got {lora_alpha!r}.")
  scale = lora_alpha / (np.sqrt(r) if cfg.get("use_rslora") else r)
  if abs(scale) > MAX_SCALE:
    raise AdapterFileError(f"{cfg_path}: lora_alpha / r = {scale:g} exceeds {MAX_SCALE:g}; "
                           "the config is corrupt.")
  weights_path = os.path.join(path, "adapter_model.safetensors")
  if not os.path.isfile(weights_path):
    hint = " (pickle .bin weights are never loaded; re-save with safe_serialization)" if \
        os.path.isfile(os.path.join(path, "adapter_model.bin")) else ""
    raise FileNotFoundError(f"{path}: no adapter_model.safetensors{hint}.")
  try:
    weights = SafetensorsFile(weights_path)
  except CorruptFileError as e:
    raise AdapterFileError(str(e)) from None
  shapes = bcfg.projection_shapes()
  a: dict[str, np.ndarray] = {}
  b: dict[str, np.ndarray] = {}
  present: dict[tuple[str, str], set[int]] = {}  # (target, A|B) -> layers that have it
  for key in weights.keys():
    m = _KEY.search(key)
    if m is None or m.group(2) not in _BY_MODULE:
      raise AdapterFileError(f"{path}: tensor {key} is not a LoRA factor of {'/'.join(TARGETS)}.")
    layer, target, which = int(m.group(1)), _BY_MODULE[m.group(2)], m.group(3)
    if layer >= bcfg.num_layers:
      raise AdapterFileError(f"{path}: {key} is for layer {layer}, the backbone has {bcfg.num_layers}.")
    d_in, d_out = shapes[target]
    w = np.asarray(weights.read(key), np.float32)
    want = (r, d_in) if which == "A" else (d_out, r)
    if w.shape != want:
      raise AdapterFileError(f"{path}: {key} has shape {list(w.shape)}, expected {list(want)}.")
    if not np.all(np.isfinite(w)):
      raise AdapterFileError(f"{path}: {key} holds NaN or inf values.")
    seen = present.setdefault((target, which), set())
    if layer in seen:
      raise AdapterFileError(f"{path}: two tensors hold lora_{which} of layer {layer}'s {m.group(2)}.")
    seen.add(layer)
    if which == "A":
      a.setdefault(target, np.zeros((bcfg.num_layers, d_in, r), np.float32))[layer] = w.T
    else:
      b.setdefault(target, np.zeros((bcfg.num_layers, r, d_out), np.float32))[layer] = w.T
  if set(a) != set(b) or not a:
    raise AdapterFileError(f"{path}: lora_A targets {sorted(a)} and lora_B targets {sorted(b)} differ or are empty.")
  for t in a:  # a layer with one factor only would silently import as no update at all
    only = present[(t, "A")] ^ present[(t, "B")]
    if only:
      raise AdapterFileError(f"{path}: {MODULES[t]} of layers {sorted(only)} has lora_A or lora_B "
                             "but not both; the adapter is incomplete.")
  return a, b, scale, {"producer": "peft", "peft_source": os.path.abspath(path),
                       "base_model": cfg.get("base_model_name_or_path")}


__all__ = ["MODULES", "TARGETS", "export_peft", "import_peft"]
