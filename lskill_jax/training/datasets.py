"""What a training run reads: the training pipeline and fixed batches for measuring the signal.

    train_ds, val_batches = make_datasets(config, tokenizer)
    probe = eval_batches(config, tokenizer, splits=("train",), docs=16)["train"]

Stage 1 reads jsonl files (data.train / data.val) or splits data.corpus_dirs on the fly;
Stage 2 reads a skill_ift json and holds out its last data.val_records records.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from absl import logging
import numpy as np

from lskill_jax.data import pipeline, records, stage1
from lskill_jax.data.corpus import build_corpus
from lskill_jax.training.step import BATCH_KEYS

SPLITS = ("train", "val")


def load_stage1_texts(data_cfg) -> tuple[list[str], list[str]]:
  """Stage-1 (train, val) texts: jsonl files, or a corpus directory split on the fly."""
  if data_cfg.get("train"):
    train, rep = records.read_pretrain_jsonl(data_cfg.train, on_error=data_cfg.on_error)
    logging.info("%s", rep.summary())
    val = []
    if data_cfg.get("val"):
      val, rep = records.read_pretrain_jsonl(data_cfg.val, on_error=data_cfg.on_error)
      logging.info("%s", rep.summary())
    return train, val
  train, val, report = build_corpus(list(data_cfg.corpus_dirs), val_fraction=data_cfg.val_fraction)
  logging.info("corpus: %s", report.summary())
  if not train:
    raise records.DataError(f"no training documents in {list(data_cfg.corpus_dirs)}:\n{report.summary()}")
  return train, val


def fitting(tokenizer, texts: list[str], seq_len: int, where: str, overlong: str = "skip",
            interleave: bool = False, field: str = "data.overlong") -> list[str]:
  """The documents that fit the length budget; refuses a corpus where none does.

  overlong: "skip" drops longer documents (counted); "split" cuts each at paragraphs into
  consecutive pieces that fit (`stage1.split_to_fit`), so long manuals still teach.
  interleave: order the pieces round-robin over their documents (every document's first
  piece, then every second piece, ...). Validation takes "another document" to be the
  neighbouring entry, which must then come from another document, not the same manual.
  field: the config field that sets `overlong` here, named in errors.
  """
  if overlong not in stage1.OVERLONG:
    raise records.DataError(f"{field}={overlong!r}: must be one of {stage1.OVERLONG}.")
  budget = seq_len - stage1.CHAT_OVERHEAD - 32
  lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
  kept = [t for t, n in zip(texts, lengths) if n <= budget]
  if overlong == "split" and len(kept) < len(texts):
    count = lambda x: len(tokenizer(x, add_special_tokens=False)["input_ids"])
    long = [t for t, n in zip(texts, lengths) if n > budget]
    per_doc = [stage1.split_to_fit(t, count, budget) for t in long]
    if interleave:
      pieces = [ps[i] for i in range(max(map(len, per_doc), default=0)) for ps in per_doc if i < len(ps)]
    else:
      pieces = [p for ps in per_doc for p in ps]
    logging.info("%s: %d documents over the %d-token budget split into %d pieces.",
                 where, len(long), seq_len, len(pieces))
    kept += pieces
  elif len(kept) < len(texts):
    logging.warning("%s: %d of %d documents are over the %d-token budget and skipped.",
                    where, len(texts) - len(kept), len(texts), seq_len)
  if not kept:
    raise records.DataError(f"{where}: every document is over the {seq_len}-token budget "
                            f"(shortest: {min(lengths)} tokens); raise data.seq_len or set "
                            f"{field}=split.")
  return kept


def _stage1_options(data) -> stage1.Stage1Options:
  """How a Stage-1 example is built, from config.data (the one place these fields are read)."""
  return stage1.Stage1Options(seq_len=data.seq_len, context_len=data.context_len,
                              p_completion=data.p_completion, min_cut=data.min_cut,
                              max_cut=data.max_cut)


def _stage2_split(config) -> tuple[list, list]:
  recs, rep = records.read_ift_json(config.data.train, on_error=config.data.on_error)
  logging.info("%s", rep.summary())
  n_val = min(config.data.get("val_records", 0), len(recs) // 5)
  return recs[:len(recs) - n_val], recs[len(recs) - n_val:]


def make_datasets(config, tokenizer, rows: Sequence[int] | None = None):
  """(training pipeline, validation batches) for config.stage.

  rows: the row indices of each global training batch this process reads
  (`sharding.process_rows`); None = all. Every process holds all validation batches.
  """
  d, batch_size = config.data, config.train.batch_size
  if config.stage == 1:
    train, val = load_stage1_texts(config.data)
    overlong = config.data.get("overlong", "skip")
    train = fitting(tokenizer, train, config.data.seq_len, "train", overlong)
    val = fitting(tokenizer, val, config.data.seq_len, "validation", overlong, interleave=True) if val else []
    mix, fraction = [], config.data.get("mix_fraction", 0.0)
    if fraction > 0:
      mix, rep = records.read_pretrain_jsonl(config.data.mix, on_error=config.data.on_error)
      logging.info("mixed in at %.0f%% of the examples: %s", 100 * fraction, rep.summary())
      # A mix of long skill documents beside a corpus of short ones wants "split" there only.
      mix = fitting(tokenizer, mix, config.data.seq_len, "data.mix",
                    config.data.get("mix_overlong", "") or overlong, field="data.mix_overlong")
    return (pipeline.stage1_dataset(tokenizer, train, _stage1_options(d), batch_size=batch_size,
                                    seed=d.seed, rows=rows, mix_texts=mix, mix_fraction=fraction),
            _stage1_batches(config, tokenizer, val[:config.train.eval_docs]))
  train_recs, val_recs = _stage2_split(config)
  return (pipeline.stage2_dataset(tokenizer, train_recs, seq_len=d.seq_len, context_len=d.context_len,
                                  batch_size=batch_size, seed=d.seed, rows=rows),
          _stage2_batches(config, tokenizer, val_recs))


def eval_batches(config, tokenizer, splits=("val",), docs: int | None = None) -> dict[str, list[dict]]:
  """Fixed batches for measuring own / none / other-document loss: {split: batches}.

  Stage 1: the first `docs` (default train.eval_docs) documents of each split, one per
  example, each in reconstruction and in completion mode (keyed by mode). Stage 2: the
  held-out records (split "val") or the first `docs` training records, under the key "stage2".
  The data is read once for all splits.
  """
  bad = [x for x in splits if x not in SPLITS]
  if bad:
    raise ValueError(f"splits must be among {SPLITS}, not {bad}.")
  docs = config.train.eval_docs if docs is None else docs
  if config.stage == 1:
    texts = dict(zip(SPLITS, load_stage1_texts(config.data)))
    return {x: _stage1_batches(config, tokenizer, (
        fitting(tokenizer, texts[x], config.data.seq_len, x, config.data.get("overlong", "skip"),
                interleave=True)
        if texts[x] else [])[:docs])
            for x in splits}
  recs = dict(zip(SPLITS, _stage2_split(config)))
  return {x: _stage2_batches(config, tokenizer, recs[x] if x == "val" else recs[x][:docs])
          for x in splits}


def _stage1_batches(config, tokenizer, texts: list[str]) -> list[dict[str, dict]]:
  # At least two rows per batch, so that every row has another document's adapter.
  d, bs = config.data, max(2, config.train.eval_batch_size)
  if len(texts) < 2:
    return []
  opts = dataclasses.replace(_stage1_options(d), p_completion=0.0)
  out = []
  for start in range(0, len(texts) - 1, bs):
    chunk = texts[start:start + bs]
    if len(chunk) < 2:
      break
    batch = {}
    for mode in ("reconstruction", "completion"):
      rng = np.random.default_rng(d.seed + start)
      exs = [stage1.build_example(tokenizer, [x], rng, opts, modes=[mode]) for x in chunk]
      batch[mode] = {k: np.stack([e[k] for e in exs]) for k in BATCH_KEYS}
    out.append(batch)
  return out


def _stage2_batches(config, tokenizer, recs: list) -> list[dict[str, dict]]:
  if not recs:
    return []
  bs = max(2, min(len(recs), config.train.eval_batch_size))
  d = config.data
  ds = pipeline.stage2_dataset(tokenizer, recs, seq_len=d.seq_len, context_len=d.context_len,
                               batch_size=bs, seed=d.seed, epochs=1)
  return [{"stage2": ds[i]} for i in range(len(ds))]
