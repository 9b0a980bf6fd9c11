"""Shared training settings (the paper's optimizer) and helpers for stage configs."""

import ml_collections


def data_defaults(stage: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      train="",                       # skill_pretrain/train.jsonl (stage 1) or skill_ift/train.json (stage 2)
      val="",                         # skill_pretrain/val.jsonl (stage 1)
      corpus_dirs=("data/starter_corpus",),  # stage 1 without jsonl: split these on the fly
      val_fraction=0.1,
      val_records=200,                # stage 2: last N records held out for validation
      on_error="raise",               # or "skip": malformed lines are skipped and counted
      seq_len=4096,                   # backbone tokens per example
      overlong="skip",                # stage 1: documents over seq_len are skipped, or "split" at paragraphs
      context_len=4087,               # compiler tokens per example
      mix="",                         # stage 1: a second jsonl corpus mixed into training ...
      mix_fraction=0.0,               # ... as this fraction of the examples (validation: data.val only)
      mix_overlong="",                # how data.mix treats documents over seq_len; "" = as data.overlong
      p_completion=0.5, min_cut=0.1, max_cut=0.3,
      seed=0,
  ))


def train_defaults(stage: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      steps=1000,
      batch_size=8,                   # examples per optimizer step (all processes together)
      accum=8,                        # micro-batches per step (batch_size / accum per pass)
      lr=5e-5 if stage == 1 else 1e-5,
      warmup_steps=200 if stage == 1 else 40,
      weight_decay=0.01,
      clip_norm=1.0,
      clip_per_group=False,           # clip memory / MetaLoRA / generator gradients separately
      memory_lr_scale=1.0,            # memory tokens learn at this multiple of lr
      frozen=(),                      # compiler groups held fixed, e.g. ("memory", "metalora"): no backward through the encode
      contrastive_weight=0.0,         # beyond the paper: reward own adapter over another's (0 = off)
      contrastive_temperature=0.1,    # nats/token at which that reward saturates
      contrastive_negatives="previous",  # or "same_source": the other adapter from the same corpus (data.mix)
      distill_weight=0.0,             # context distillation from the backbone reading the document (0 = off)
      target_weighting="uniform",     # or "context_gain": tokens count by how much the document helps
      calibration_docs=64,            # compiler.state_norm="standardize": examples to measure on
      remat=True,
      loss_chunk=512,
      seed=0,
      log_every=10,
      eval_every=100,                 # 0 = no validation
      eval_batch_size=8,
      eval_docs=64,
      save_every=200,
      keep_checkpoints=3,
      async_checkpointing=True,
      max_bad_steps=10,
      progress_bar=True,
  ))


def with_training(base: ml_collections.ConfigDict, stage: int) -> ml_collections.ConfigDict:
  c = base
  c.stage = stage
  c.init_from = ""                    # stage 2: the stage-1 workdir (or a saved compiler)
  c.init_recalibrate = False          # with init_from: re-measure the memory-state statistics
                                      # (compiler.state_norm) on this run's training documents
  c.mesh = ""                         # e.g. "data=-1,fsdp=1,tensor=1"; empty: single device
  c.data = data_defaults(stage)
  c.train = train_defaults(stage)
  return c
