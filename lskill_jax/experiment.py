"""The backbone an experiment config names, with the small tokenizer a random one trains.

It sits above `backbone/` and `data/` (a random backbone's tokenizer is trained on the
config's skill corpus), so that the backbone package never imports the data package; the
trainer, the validation, the command lines and `lsj.backbone_from_config` build from here.
"""

from __future__ import annotations

from jax.sharding import Mesh

from lskill_jax.backbone.config import from_hf_config
from lskill_jax.backbone.loading import Backbone, load_backbone, qwen_tokenizer, random_backbone
from lskill_jax.backbone.small_tokenizer import train_bpe_tokenizer
from lskill_jax.data.corpus import build_corpus


def backbone_from_config(config, mesh: Mesh | None = None, seed: int = 0) -> Backbone:
  """The backbone an experiment config names: `config.model` (a source), or "random" weights
  with the shape of `config.backbone_shape` (an HF config dict). A random backbone gets a
  byte-level BPE trained on `config.tokenizer_corpus` when the config names one, else the
  shipped Qwen3 tokenizer when the shape is Qwen3's and the vocabulary fits."""
  dtype = config.get("dtype", "float32")
  if config.model == "random":
    cfg = from_hf_config(dict(config.backbone_shape))
    if config.get("tokenizer_corpus"):
      train, val, _ = build_corpus(list(config.tokenizer_corpus), val_fraction=0.0)
      tok = train_bpe_tokenizer(train + val, cfg.vocab_size)
    else:
      tok = qwen_tokenizer() if cfg.model_type == "qwen3" else None
      if tok is not None and len(tok) > cfg.vocab_size:
        tok = None
    return random_backbone(cfg, seed=seed, dtype=dtype, mesh=mesh, tokenizer=tok)
  if not config.model:
    raise ValueError(f"config {config.get('name', '')!r} names no model; set --config.model=PATH.")
  return load_backbone(config.model, dtype=dtype, mesh=mesh)
