"""The LatentSkill authors' compiler checkpoints: read theirs into our params, write ours as theirs.

Their checkpoint directory (as their trainer writes it):
  hypernetwork.pth          the generator's torch state dict: `layer_pe` [L, H], `token_pe` [M, H],
                            `transformer_layers.{i}.` + `self_attn.in_proj_weight` [3W, W] (rows
                            q | k | v), `self_attn.in_proj_bias` [3W], `self_attn.out_proj.*`,
                            `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*` (Linear weights [out, in])
  metalora.pth              {layer: {"attention": {q, k, v, o}, "mlp": {gate, up, down}}}, each
                            {"A": [1, d_in, R], "B": [1, R, d_out], "C": None}
  mem_tokens.pt             an nn.Parameter [M, H]
  trainer_state.json        {"global_step": int}
  ift_additional_metalora.pth  (optional) a second MetaLoRA of their Stage 2
No backbone, tokenizer or config is saved with it: the generator's heads, FFN size, scale, carve
method, axis order, eps and activation come from their YAML config, which `read_config` reads.

Every .pth is read with `torch.load(weights_only=True)` (no arbitrary pickle). Whatever the
import could not represent exactly is refused, naming the field and what to do instead; so is
an export of a compiler their code cannot run (see `config_from_spec`).
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
import yaml

from lskill_jax.backbone.config import BackboneConfig
from lskill_jax.backbone.model import PROJECTIONS, TARGETS
from lskill_jax.compiler import checkpoint as ckpt
from lskill_jax.compiler import hypernet, shipped
from lskill_jax.compiler.hypernet import CompilerSpec
from lskill_jax.io import atomic_dir

GENERATOR_FILE, GENERATOR_ALT = "hypernetwork.pth", "skill_hypernet.pth"
METALORA_FILE, MEMORY_FILE = "metalora.pth", "mem_tokens.pt"
STATE_FILE, IFT_FILE = "trainer_state.json", "ift_additional_metalora.pth"
CONFIG_FILE = "latentskill_config.yaml"   # the config an export writes beside the checkpoint
# Their MetaLoRA groups the targets by the HF block that holds them, under their own names.
BLOCKS = {theirs: tuple(t for t, p in PROJECTIONS.items() if p.hf.startswith(block + "."))
          for theirs, block in (("attention", "self_attn"), ("mlp", "mlp"))}
# Their evaluation tokenizes a skill alone and right-truncates it at this many tokens.
CONTEXT_LEN = 4096
# Their generator is torch's TransformerEncoderLayer; ours has these fixed settings. (Its
# dropout is accepted whatever its value: it does nothing when compiling.)
_ENCODER = {"activation": "gelu", "layer_norm_eps": 1e-5, "norm_first": False, "bias": True,
            "batch_first": True}
# Their backbone and config classes, which their loader imports by name from the YAML.
_THEIR_CLASSES = {"backbone_class_path": "latentskill.models.qwen_lora.LatentSkillQwen3ForCausalLM",
                  "config_class_path": "latentskill.models.qwen_lora.Qwen3Config"}


class LatentSkillFormatError(ckpt.CheckpointError):
  """A LatentSkill checkpoint or config cannot be converted exactly (the message says why)."""


# ----------------------------------------------------------------------------- config


def read_config(config: str | Mapping) -> dict:
  """Their YAML config (a path or an already-parsed mapping) as a plain dict."""
  if isinstance(config, Mapping):
    return _plain(config)
  try:
    with open(config) as f:
      data = yaml.safe_load(f)
  except yaml.YAMLError as e:
    raise LatentSkillFormatError(f"{config}: not valid YAML ({e}).") from None
  if not isinstance(data, dict):
    raise LatentSkillFormatError(f"{config}: expected a YAML mapping, got {type(data).__name__}.")
  return data


def _plain(x):
  """A deep copy of nested mappings and lists as dicts and lists (an OmegaConf config too)."""
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)) or type(x).__name__ == "ListConfig":
    return [_plain(v) for v in x]
  return x


def _field(cfg: Mapping, dotted: str, kind: type, default: Any = None):
  """cfg's value at a dotted path, checked to be of `kind`; missing -> default (or refused)."""
  node: Any = cfg
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      if default is not None:
        return default
      raise LatentSkillFormatError(f"config field {dotted!r} is missing; the LatentSkill config "
                                   "that trained the checkpoint has it.")
    node = node[part]
  if isinstance(node, str) and "${" in node:
    raise LatentSkillFormatError(f"config field {dotted!r} is the interpolation {node!r}; write "
                                 "its value in the YAML (resolve it with OmegaConf first).")
  ok = isinstance(node, kind) and not (kind in (int, float) and isinstance(node, bool))
  if kind is float and not ok and not isinstance(node, bool):
    try:  # YAML 1.1 reads 1e-3 (no dot) as a string; OmegaConf, as their code does, as a float
      node, ok = float(node), True
    except (TypeError, ValueError):
      pass
  if not ok:
    raise LatentSkillFormatError(f"config field {dotted!r} must be {kind.__name__}, got {node!r}.")
  return node


def _refuse_unless(ok: bool, field: str, value, why: str) -> None:
  if not ok:
    raise LatentSkillFormatError(f"config field {field!r} = {value!r}: {why}")


def spec_from_config(cfg: Mapping, backbone: BackboneConfig, metalora_rank: int,
                     context_len: int = CONTEXT_LEN) -> CompilerSpec:
  """The CompilerSpec equivalent to their config on `backbone` (refuses what has none).

  metalora_rank comes from metalora.pth: their loader takes it from the file, not the config.
  """
  _refuse_unless(backbone.model_type == "qwen3", "model.backbone_class_path", backbone.model_type,
                 "their compilers run on a Qwen3 backbone; load the Qwen3 model it was trained "
                 "for (Qwen3-8B for the released checkpoints).")
  kind = _field(cfg, "hypernetwork.type", str)
  _refuse_unless(kind == "transformer", "hypernetwork.type", kind,
                 "only the transformer generator has an equivalent here (not linear/lineargate).")
  method = _field(cfg, "hypernetwork.method", str)
  _refuse_unless(method == "rl", "hypernetwork.method", method,
                 "only the 'rl' carve (A [in, r] then B [r, out], row-major) is ours.")
  tc = "hypernetwork.transformer_cfg"
  pool = _field(cfg, f"{tc}.mean_pool_size", int)
  _refuse_unless(pool == 1, f"{tc}.mean_pool_size", pool,
                 "mean-pooling memory slots is not implemented here; only 1 converts.")
  couple = _field(cfg, f"{tc}.couple_num_layers", int)
  _refuse_unless(couple == 0, f"{tc}.couple_num_layers", couple,
                 "coupling layers over parameter blocks are not implemented here; only 0 converts.")
  enc = f"{tc}.encoder_cfg"
  width = _field(cfg, f"{enc}.d_model", int)
  _refuse_unless(width == backbone.hidden_size, f"{enc}.d_model", width,
                 f"their generator runs at the backbone's width; this backbone's hidden size is "
                 f"{backbone.hidden_size}, so the checkpoint belongs to another backbone.")
  ffn = _field(cfg, f"{enc}.dim_feedforward", int)
  _refuse_unless(ffn > 0 and ffn % width == 0, f"{enc}.dim_feedforward", ffn,
                 f"our generator's FFN size is a whole multiple of its width {width}.")
  heads = _field(cfg, f"{enc}.nhead", int)
  _refuse_unless(heads > 0 and width % heads == 0, f"{enc}.nhead", heads,
                 f"the number of heads must divide d_model={width}.")
  for name, want in _ENCODER.items():
    got = _field(cfg, f"{enc}.{name}", type(want), default=want)
    _refuse_unless(got == want, f"{enc}.{name}", got, f"our generator has {name}={want!r} only.")
  rank = _field(cfg, "model.lora_r", int)
  _refuse_unless(rank > 0, "model.lora_r", rank, "the LoRA rank must be positive.")
  scale = _field(cfg, f"{tc}.scale", float)
  _refuse_unless(scale > 0 and math.isfinite(scale), f"{tc}.scale", scale, "must be positive.")
  return CompilerSpec(
      backbone=backbone, rank=rank, scale=scale, targets=TARGETS, metalora_rank=metalora_rank,
      generator_depth=_field(cfg, f"{tc}.num_layers", int), generator_width=0,
      generator_heads=heads, generator_ffn_mult=ffn // width,
      layer_axis_first=_field(cfg, f"{tc}.layer_transformer_first", bool),
      context_len=context_len)


def config_from_spec(spec: CompilerSpec, model_path: str = "") -> dict:
  """Their config sections that define `spec`'s compiler (refuses what their code cannot run).

  Their code loads it as the `model`, `hypernetwork` and `optim` sections of a run config
  (the other sections are about data and training; merge them in to train there).
  """
  cfg, g = spec.backbone, spec.geometry
  where = "CompilerSpec"
  if cfg.model_type != "qwen3":
    raise LatentSkillFormatError(
        f"backbone {cfg.model_type!r}: their code builds a Qwen3 backbone only; a compiler for "
        "another family stays in our format (SkillCompiler.save or shipped.export).")
  if spec.state_norm != "none":
    raise LatentSkillFormatError(
        f"{where}.state_norm = {spec.state_norm!r}: their generator reads raw memory states; "
        "train with state_norm='none' to export.")
  if spec.generator_width not in (0, cfg.hidden_size):
    raise LatentSkillFormatError(
        f"{where}.generator_width = {spec.generator_width}: their generator runs at the "
        f"backbone's hidden size {cfg.hidden_size}; train with generator_width=0 to export.")
  if tuple(spec.targets) != TARGETS:
    raise LatentSkillFormatError(
        f"{where}.targets = {list(spec.targets)}: their adapters cover all of {list(TARGETS)}; "
        "train with every target to export.")
  if g.per_layer % g.hidden:
    raise LatentSkillFormatError(
        f"{where}.rank = {spec.rank}: one layer's LoRA holds {g.per_layer} numbers, not a "
        f"multiple of the hidden size {g.hidden}, which their trainer requires (M = P / H; ours "
        "rounds up). Pick a rank that makes it a multiple to export.")
  heads = spec.generator_heads or cfg.num_heads
  width = cfg.hidden_size
  encoder = {"d_model": width, "nhead": heads, "dim_feedforward": spec.generator_ffn_mult * width,
             "dropout": 0.0, **_ENCODER}
  # Their generator checks that every A/B block boundary is a multiple of the coupling width,
  # even with no coupling layers: the largest divisor of H that divides every block passes.
  couple = math.gcd(width, *(s.size for s in g.slices))
  return {
      "model": {"lora_r": spec.rank, "metalora_r": spec.metalora_rank,
                "ift_additional_metalora_r": -1, "num_mem_token": g.memory_tokens,
                **_THEIR_CLASSES, "tokenizer_from": model_path, "model_from": model_path},
      "hypernetwork": {"type": "transformer", "method": "rl", "transformer_cfg": {
          "encoder_cfg": encoder,
          "couple_encoder_cfg": {**encoder, "d_model": couple, "nhead": 1,
                                 "dim_feedforward": 2 * couple},
          "layer_transformer_first": spec.layer_axis_first, "mean_pool_size": 1,
          "num_layers": spec.generator_depth, "couple_num_layers": 0, "scale": spec.scale}},
      # Their SkillHypernetwork reads optim.adapter_reg whenever an optim section exists.
      "optim": {"adapter_reg": 0.0},
      "data": {"context_max_length": spec.context_len},
      "hidden_size": width, "num_layers": cfg.num_layers, "num_mem_token": g.memory_tokens,
  }


# ----------------------------------------------------------------------------- tensors


def _torch_load(path: str):
  """A .pth/.pt file's contents, never running pickled code (weights_only=True)."""
  import pickle

  import torch
  if not os.path.isfile(path):
    raise LatentSkillFormatError(f"{path}: missing; a LatentSkill checkpoint directory holds "
                                 f"{GENERATOR_FILE}, {METALORA_FILE} and {MEMORY_FILE}.")
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise LatentSkillFormatError(
        f"{path}: cannot be read as plain tensors with torch.load(weights_only=True) ({first}); "
        "only tensors, dicts and lists are accepted, so re-save the file from its tensors.") from None


def _array(x, where: str) -> np.ndarray:
  """A floating torch tensor as float32 numpy (refuses other types and non-finite values)."""
  import torch
  if not isinstance(x, torch.Tensor) or not x.is_floating_point():
    kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
    raise LatentSkillFormatError(f"{where}: expected a floating-point tensor, got {kind}.")
  a = x.detach().to(torch.float32).numpy()
  if not np.all(np.isfinite(a)):
    raise LatentSkillFormatError(f"{where}: holds NaN or inf values; refusing to convert it.")
  return a


def _expect(a: np.ndarray, shape: tuple, where: str, hint: str) -> np.ndarray:
  if tuple(a.shape) != tuple(shape):
    raise LatentSkillFormatError(f"{where}: shape {tuple(a.shape)}, this backbone needs "
                                 f"{tuple(shape)}; {hint}")
  return a


# Per encoder layer: (their key, our leaf, transposed?) for the tensors that map one to one
# (torch Linear weights are [out, in], Flax Dense kernels [in, out]); in the order they store them.
_SAME_SHAPE = (("self_attn.out_proj.bias", "attn/out/bias", False),
               ("linear1.weight", "ffn_in/kernel", True), ("linear1.bias", "ffn_in/bias", False),
               ("linear2.weight", "ffn_out/kernel", True), ("linear2.bias", "ffn_out/bias", False),
               ("norm1.weight", "norm1/scale", False), ("norm1.bias", "norm1/bias", False),
               ("norm2.weight", "norm2/scale", False), ("norm2.bias", "norm2/bias", False))


def generator_from_torch(sd: Mapping[str, Any], spec: CompilerSpec, where: str) -> dict:
  """Their generator state dict -> our flat generator leaves {'generator/layer_0/...': array}."""
  g, L = spec.geometry, spec.backbone.num_layers
  W, heads = spec.backbone.hidden_size, spec.generator_heads or spec.backbone.num_heads
  F, hd = spec.generator_ffn_mult * W, W // heads
  hint = "the checkpoint was trained for another backbone or config; pass the ones it was trained with."
  want = {"layer_pe": (L, W), "token_pe": (g.memory_tokens, W)}
  for i in range(spec.generator_depth):
    p = f"transformer_layers.{i}."
    want.update({p + "self_attn.in_proj_weight": (3 * W, W), p + "self_attn.in_proj_bias": (3 * W,),
                 p + "self_attn.out_proj.weight": (W, W), p + "self_attn.out_proj.bias": (W,),
                 p + "linear1.weight": (F, W), p + "linear1.bias": (F,),
                 p + "linear2.weight": (W, F), p + "linear2.bias": (W,),
                 p + "norm1.weight": (W,), p + "norm1.bias": (W,),
                 p + "norm2.weight": (W,), p + "norm2.bias": (W,)})
  extra, missing = sorted(set(sd) - set(want)), sorted(set(want) - set(sd))
  if extra or missing:
    raise LatentSkillFormatError(
        f"{where}: keys do not match a {spec.generator_depth}-layer transformer generator "
        f"(unexpected {extra[:4]}, missing {missing[:4]}); check hypernetwork.transformer_cfg."
        "num_layers and couple_num_layers in the config.")
  t = {k: _expect(_array(sd[k], f"{where}:{k}"), shape, f"{where}:{k}", hint) for k, shape in want.items()}
  out = {"generator/layer_pe": t["layer_pe"], "generator/token_pe": t["token_pe"]}
  for i in range(spec.generator_depth):
    p, q = f"transformer_layers.{i}.", f"generator/layer_{i}/"
    w_in, b_in = t[p + "self_attn.in_proj_weight"], t[p + "self_attn.in_proj_bias"]
    for j, name in enumerate(("query", "key", "value")):
      # torch rows j*W:(j+1)*W are that projection's [out, in]; ours is [in, heads, head_dim].
      out[q + f"attn/{name}/kernel"] = w_in[j * W:(j + 1) * W].T.reshape(W, heads, hd)
      out[q + f"attn/{name}/bias"] = b_in[j * W:(j + 1) * W].reshape(heads, hd)
    out[q + "attn/out/kernel"] = t[p + "self_attn.out_proj.weight"].T.reshape(heads, hd, W)
    for theirs, ours, transpose in _SAME_SHAPE:
      out[q + ours] = t[p + theirs].T if transpose else t[p + theirs]
  return out


def generator_to_torch(flat: Mapping[str, np.ndarray], spec: CompilerSpec) -> dict:
  """Our flat generator leaves -> their state dict (same keys, order and layouts as theirs)."""
  W = spec.backbone.hidden_size
  sd = collections.OrderedDict(layer_pe=flat["generator/layer_pe"], token_pe=flat["generator/token_pe"])
  for i in range(spec.generator_depth):
    p, q = f"transformer_layers.{i}.", f"generator/layer_{i}/"
    names = ("query", "key", "value")
    sd[p + "self_attn.in_proj_weight"] = np.concatenate(
        [flat[q + f"attn/{n}/kernel"].reshape(W, W).T for n in names])
    sd[p + "self_attn.in_proj_bias"] = np.concatenate([flat[q + f"attn/{n}/bias"].reshape(W) for n in names])
    sd[p + "self_attn.out_proj.weight"] = flat[q + "attn/out/kernel"].reshape(W, W).T
    for theirs, ours, transpose in _SAME_SHAPE:
      sd[p + theirs] = flat[q + ours].T if transpose else flat[q + ours]
  return sd


def metalora_rank_of(tree, where: str) -> int:
  """The MetaLoRA rank R of their metalora.pth tree (from layer 0's q factor A [1, d_in, R])."""
  try:
    return int(tree[0]["attention"]["q"]["A"].shape[-1])
  except (KeyError, TypeError, IndexError, AttributeError):
    raise LatentSkillFormatError(
        f"{where}: not a MetaLoRA tree {{layer: {{'attention': {{q,k,v,o}}, 'mlp': "
        "{gate,up,down}}}} with 'A'/'B' tensors.") from None


def metalora_from_torch(tree, spec: CompilerSpec, where: str) -> dict:
  """Their MetaLoRA tree -> our flat leaves {'metalora/a/q': [L, d_in, R], ...}."""
  L, R = spec.backbone.num_layers, spec.metalora_rank
  shapes = spec.backbone.projection_shapes()
  if not isinstance(tree, Mapping) or set(tree) != set(range(L)):
    keys = sorted(tree, key=str) if isinstance(tree, Mapping) else type(tree).__name__
    raise LatentSkillFormatError(f"{where}: layers {keys} do not match the backbone's {L} layers "
                                 f"(0..{L - 1}); the checkpoint belongs to another backbone.")
  out = {}
  for t in TARGETS:
    block = next(b for b, ts in BLOCKS.items() if t in ts)
    a, b = [], []
    for i in range(L):
      try:
        leaf = tree[i][block][t]
        ta, tb, tc = leaf["A"], leaf["B"], leaf.get("C")
      except (KeyError, TypeError, AttributeError):
        raise LatentSkillFormatError(f"{where}: layer {i} has no {block}/{t} entry with 'A' and "
                                     "'B'.") from None
      if tc is not None:
        raise LatentSkillFormatError(f"{where}: layer {i} {t} has a bias term 'C'; our MetaLoRA has "
                                     "none (their Qwen3 projections are bias-free).")
      d_in, d_out = shapes[t]
      hint = "the checkpoint was trained for another backbone."
      a.append(_expect(_array(ta, f"{where}[{i}].{t}.A"), (1, d_in, R), f"{where}[{i}].{t}.A", hint)[0])
      b.append(_expect(_array(tb, f"{where}[{i}].{t}.B"), (1, R, d_out), f"{where}[{i}].{t}.B", hint)[0])
    out[f"metalora/a/{t}"], out[f"metalora/b/{t}"] = np.stack(a), np.stack(b)
  return out


def metalora_to_torch(flat: Mapping[str, np.ndarray], num_layers: int) -> dict:
  """Our flat MetaLoRA leaves -> their tree {layer: {block: {target: {A, B, C}}}} (numpy)."""
  return {i: {block: {t: {"A": flat[f"metalora/a/{t}"][i][None], "B": flat[f"metalora/b/{t}"][i][None],
                          "C": None} for t in ts} for block, ts in BLOCKS.items()}
          for i in range(num_layers)}


# ----------------------------------------------------------------------------- directories


def read_checkpoint(ckpt_dir: str, backbone: BackboneConfig, config: str | Mapping,
                    context_len: int = CONTEXT_LEN) -> tuple[CompilerSpec, Any, dict]:
  """(spec, params as numpy leaves shaped like hypernet.init's, info) from their directory.

  info: {"global_step": int or None} from trainer_state.json.
  """
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"no LatentSkill checkpoint directory at {ckpt_dir!r}.")
  if not any(os.path.isfile(os.path.join(ckpt_dir, n)) for n in (GENERATOR_FILE, GENERATOR_ALT)):
    subdirs = sorted(n for n in os.listdir(ckpt_dir) if n.startswith("checkpoint-"))
    hint = f" It holds {subdirs}: pass one of them." if subdirs else ""
    raise LatentSkillFormatError(f"{ckpt_dir}: no {GENERATOR_FILE}; not a LatentSkill checkpoint "
                                 f"directory.{hint}")
  if os.path.exists(os.path.join(ckpt_dir, IFT_FILE)):
    raise LatentSkillFormatError(
        f"{ckpt_dir}: holds {IFT_FILE}, a second MetaLoRA of their Stage 2 that the import cannot "
        "carry (dropping it would change every adapter; their evaluation refuses it too). "
        "Convert a checkpoint saved without it.")
  cfg = read_config(config)
  meta_path = os.path.join(ckpt_dir, METALORA_FILE)
  meta_tree = _torch_load(meta_path)
  spec = spec_from_config(cfg, backbone, metalora_rank_of(meta_tree, meta_path), context_len)
  gen_path = os.path.join(ckpt_dir, GENERATOR_FILE)
  if not os.path.isfile(gen_path):
    gen_path = os.path.join(ckpt_dir, GENERATOR_ALT)
  state_dict = _torch_load(gen_path)
  if not isinstance(state_dict, Mapping):
    raise LatentSkillFormatError(f"{gen_path}: expected a state dict, got {type(state_dict).__name__}.")
  mem_path = os.path.join(ckpt_dir, MEMORY_FILE)
  memory = _expect(_array(_torch_load(mem_path), mem_path),
                   (spec.geometry.memory_tokens, backbone.hidden_size), mem_path,
                   f"model.lora_r={spec.rank} gives {spec.geometry.memory_tokens} memory tokens "
                   "on this backbone; check lora_r and the backbone.")
  flat = {"memory": memory, **generator_from_torch(state_dict, spec, gen_path),
          **metalora_from_torch(meta_tree, spec, meta_path)}
  abstract = jax.eval_shape(lambda: hypernet.init(jax.random.key(0), spec))
  params = shipped.unflatten(flat, abstract, ckpt_dir)
  info = {"global_step": None}
  state_path = os.path.join(ckpt_dir, STATE_FILE)
  if os.path.isfile(state_path):
    with open(state_path) as f:
      info["global_step"] = json.load(f).get("global_step")
  return spec, params, info


def write_checkpoint(spec: CompilerSpec, params, out_dir: str, *, model_path: str = "",
                     global_step: int = 0) -> str:
  """Writes params in their checkpoint layout (fp32) + CONFIG_FILE, atomically; returns out_dir."""
  import torch
  config = config_from_spec(spec, model_path)  # refuses first, before anything is written
  flat = {k: np.ascontiguousarray(v, np.float32) for k, v in shipped.flatten(params).items()}

  def tensors(tree):
    if isinstance(tree, dict):
      return type(tree)((k, tensors(v)) for k, v in tree.items())
    return None if tree is None else torch.from_numpy(np.array(tree, np.float32))

  with atomic_dir(out_dir) as tmp:
    torch.save(tensors(generator_to_torch(flat, spec)), os.path.join(tmp, GENERATOR_FILE))
    torch.save(tensors(metalora_to_torch(flat, spec.backbone.num_layers)),
               os.path.join(tmp, METALORA_FILE))
    # Their loader assigns the loaded object to a Parameter attribute: a plain tensor fails.
    torch.save(torch.nn.Parameter(tensors(flat["memory"])), os.path.join(tmp, MEMORY_FILE))
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
      json.dump({"global_step": int(global_step)}, f, indent=2)
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      yaml.safe_dump(config, f, sort_keys=False)
  return out_dir
