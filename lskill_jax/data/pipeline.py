"""Grain input pipelines for both stages: deterministic from a seed, batched to fixed shapes,
with an iterator state that checkpoints save and restore exactly.

Sharded per JAX process by rows of the global batch: given `rows` (the row indices its devices
hold, `sharding.process_rows`), a process builds only those rows of every global batch of
`batch_size` examples, selected after the shuffle and the per-example random map, so the
processes together see exactly the batches (same examples, same row order) that one process
reading everything would.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

from lskill_jax.data import stage1, stage2


def _batched_rows(ds, batch_size: int, rows: Sequence[int] | None):
  """Batches [len(rows), ...] of the given rows of each global batch of `ds`'s elements.

  Element (k · batch_size + rows[j]) becomes row j of local batch k; the others are never
  built (Grain maps lazily by index), and each keeps the random stream of its global index.
  """
  rows = None if rows is None else tuple(rows)
  if rows is None or rows == tuple(range(batch_size)):
    return ds.batch(batch_size, drop_remainder=True)
  if not rows or list(rows) != sorted(set(rows)) or not 0 <= rows[0] <= rows[-1] < batch_size:
    raise ValueError(f"rows {rows} are not increasing row indices of a batch of {batch_size}.")
  n = len(rows)
  local = grain.MapDataset.range(len(ds) // batch_size * n)
  return local.map(lambda j: ds[j // n * batch_size + rows[j % n]]).batch(n, drop_remainder=True)


def stage1_groups(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
  """Packing groups of document indices (first-fit by token count)."""
  lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
  # Room for the template's own text (system prompt, role headers) around the pairs.
  return stage1.pack_documents(lengths, budget=seq_len - 32)


def _stage1_examples(tokenizer, texts: list[str], opts: stage1.Stage1Options, epochs: int, seed: int):
  groups = stage1_groups(tokenizer, texts, opts.seq_len)
  ds = grain.MapDataset.source(groups).repeat(epochs).shuffle(seed=seed)
  return ds.random_map(lambda group, rng: stage1.build_example(tokenizer, [texts[i] for i in group], rng, opts),
                       seed=seed + 1)


def stage1_dataset(tokenizer, texts: list[str], opts: stage1.Stage1Options, *, batch_size: int,
                   seed: int = 0, epochs: int = 1000, rows: Sequence[int] | None = None,
                   mix_texts: Sequence[str] = (), mix_fraction: float = 0.0):
  """Batches of packed Stage-1 examples: a grain.MapDataset of dicts of [batch, ...] arrays.

  opts: how each example is built (lengths, completion share and cut); batch_size: examples
  per optimizer step, all processes and micro-batches; seed: the shuffle and the per-example
  randomness; rows: this process's row indices of each batch, None = all.

  mix_texts, mix_fraction: a second corpus that makes up that fraction of the examples,
  interleaved evenly (e.g. the items task beside real documents); each example then has a
  "source" ([batch] int32 once batched): 0 from `texts`, 1 from `mix_texts`. With no mix the
  examples are exactly those of `texts` alone.
  """
  ds = _stage1_examples(tokenizer, texts, opts, epochs, seed)
  if mix_fraction > 0:
    if not mix_texts:
      raise ValueError(f"mix_fraction={mix_fraction} needs mix_texts (the corpus to mix in).")
    other = _stage1_examples(tokenizer, list(mix_texts), opts, epochs, seed + 2)
    tagged = lambda source: lambda example: {**example, "source": np.int32(source)}
    ds = grain.MapDataset.mix([ds.map(tagged(0)), other.map(tagged(1))],
                              weights=[1.0 - mix_fraction, mix_fraction])
  return _batched_rows(ds, batch_size, rows)


def stage2_dataset(tokenizer, records: list[dict], *, seq_len: int, context_len: int,
                   batch_size: int, seed: int = 0, epochs: int = 1000,
                   rows: Sequence[int] | None = None):
  """Batches of Stage-2 examples (one record each; the rest as in `stage1_dataset`)."""
  ds = grain.MapDataset.source(records).repeat(epochs).shuffle(seed=seed)
  ds = ds.map(lambda r: stage2.build_example(tokenizer, r, context_len, seq_len))
  return _batched_rows(ds, batch_size, rows)


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
