"""Grain input pipelines for both stages: deterministic from a seed, sharded per JAX process,
batched to fixed shapes, with an iterator state that checkpoints save and restore exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import numpy as np

from lskill_jax.data import stage1, stage2


@dataclasses.dataclass
class DataConfig:
  seq_len: int
  context_len: int
  batch_size: int             # examples per process per optimizer step (all micro-batches)
  seed: int = 0
  p_completion: float = 0.5
  min_cut: float = 0.1
  max_cut: float = 0.3


def _shard(ds, shard_index: int | None, shard_count: int | None):
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  return ds[index::count] if count > 1 else ds


def stage1_groups(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
  """Packing groups of document indices (first-fit by token count)."""
  lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
  # Room for the template's own text (system prompt, role headers) around the pairs.
  return stage1.pack_documents(lengths, budget=seq_len - 32)


def stage1_dataset(tokenizer, texts: list[str], cfg: DataConfig, *, epochs: int = 1000,
                   shard_index: int | None = None, shard_count: int | None = None):
  """Batches of packed Stage-1 examples: a grain.MapDataset of dicts of [batch, ...] arrays."""
  groups = stage1_groups(tokenizer, texts, cfg.seq_len)
  opts = stage1.Stage1Options(seq_len=cfg.seq_len, context_len=cfg.context_len,
                              p_completion=cfg.p_completion, min_cut=cfg.min_cut, max_cut=cfg.max_cut)
  ds = _shard(grain.MapDataset.source(groups), shard_index, shard_count)
  ds = ds.repeat(epochs).shuffle(seed=cfg.seed)
  ds = ds.random_map(lambda group, rng: stage1.build_example(tokenizer, [texts[i] for i in group], rng, opts),
                     seed=cfg.seed + 1)
  return ds.batch(cfg.batch_size, drop_remainder=True)


def stage2_dataset(tokenizer, records: list[dict], cfg: DataConfig, *, epochs: int = 1000,
                   shard_index: int | None = None, shard_count: int | None = None):
  """Batches of Stage-2 examples (one record each)."""
  ds = _shard(grain.MapDataset.source(records), shard_index, shard_count)
  ds = ds.repeat(epochs).shuffle(seed=cfg.seed)
  ds = ds.map(lambda r: stage2.build_example(tokenizer, r, cfg.context_len, cfg.seq_len))
  return ds.batch(cfg.batch_size, drop_remainder=True)


class Batches:
  """An iterator over a dataset's batches whose position can be saved and restored."""

  def __init__(self, dataset):
    self._it = iter(dataset.to_iter_dataset())

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def __iter__(self):
    return self

  def get_state(self) -> dict[str, Any]:
    return self._it.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._it.set_state(state)
