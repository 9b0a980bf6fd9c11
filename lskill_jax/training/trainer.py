"""The training loop for both stages: data, jitted steps, validation, metrics, Orbax checkpoints.

    metrics = train(config, workdir)     # config: configs/stage{1,2}_*.py

Workdir layout: compiler.json (what `SkillCompiler.load(workdir, backbone)` reads),
checkpoints/<step>/{params,opt_state,data}/ (Orbax, async, keep-N; `data` holds the step and
the Grain iterator state), metrics.jsonl (one line per logged step and per validation), tb/ (TensorBoard).
Resuming picks the latest complete step; an interrupted save leaves only a temporary folder
that Orbax ignores, so the previous checkpoint stays the latest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from lskill_jax import sharding as shd
from lskill_jax.adapter.adapter import base_fingerprint
from lskill_jax.backbone.loading import backbone_from_config
from lskill_jax.compiler import checkpoint as compiler_ckpt
from lskill_jax.compiler.skill_compiler import init_params, spec_from_config
from lskill_jax.data import pipeline, records, stage1
from lskill_jax.data.corpus import build_corpus
from lskill_jax.sharded_call import put
from lskill_jax.training import optimizer as optim
from lskill_jax.training.step import (BATCH_KEYS, StepConfig, TrainState, batch_logical, eval_step,
                                      state_shardings, train_step)


class NonFiniteLossError(RuntimeError):
  """Training produced non-finite losses for too many consecutive steps."""


# ----------------------------------------------------------------------------- data


def _load_texts(data_cfg) -> tuple[list[str], list[str]]:
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


def _fits(tokenizer, texts: list[str], seq_len: int, where: str) -> list[str]:
  """Drops documents over the length budget (counted); refuses a corpus where all are."""
  lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
  kept = [t for t, n in zip(texts, lengths) if n + stage1.CHAT_OVERHEAD + 32 <= seq_len]
  if len(kept) < len(texts):
    logging.warning("%s: %d of %d documents are over the %d-token budget and skipped.",
                    where, len(texts) - len(kept), len(texts), seq_len)
  if not kept:
    raise records.DataError(f"{where}: every document is over the {seq_len}-token budget "
                            f"(shortest: {min(lengths)} tokens); raise data.seq_len or split them.")
  return kept


def _datasets(config, tokenizer):
  d = config.data
  dcfg = pipeline.DataConfig(seq_len=d.seq_len, context_len=d.context_len,
                             batch_size=config.train.batch_size, seed=d.seed,
                             p_completion=d.p_completion, min_cut=d.min_cut, max_cut=d.max_cut)
  if config.stage == 1:
    train, val = _load_texts(d)
    train = _fits(tokenizer, train, d.seq_len, "train")
    val = _fits(tokenizer, val, d.seq_len, "validation") if val else []
    return pipeline.stage1_dataset(tokenizer, train, dcfg), _stage1_val_batches(tokenizer, val, config)
  recs, rep = records.read_ift_json(d.train, on_error=d.on_error)
  logging.info("%s", rep.summary())
  n_val = min(d.get("val_records", 0), len(recs) // 5)
  train_recs, val_recs = recs[:len(recs) - n_val], recs[len(recs) - n_val:]
  val_batches = []
  if val_recs:
    bs = max(2, min(len(val_recs), config.train.eval_batch_size))
    ds = pipeline.stage2_dataset(tokenizer, val_recs, dataclasses.replace(dcfg, batch_size=bs), epochs=1)
    val_batches = [{"stage2": ds[i]} for i in range(len(ds))]
  return pipeline.stage2_dataset(tokenizer, train_recs, dcfg), val_batches


def _stage1_val_batches(tokenizer, texts: list[str], config) -> list[dict[str, dict]]:
  """Held-out batches, one document per example, in reconstruction and in completion mode."""
  if len(texts) < 2:
    return []
  d, bs = config.data, max(2, config.train.eval_batch_size)
  opts = stage1.Stage1Options(seq_len=d.seq_len, context_len=d.context_len, p_completion=0.0,
                              min_cut=d.min_cut, max_cut=d.max_cut)
  texts = texts[:config.train.eval_docs]
  out = []
  for start in range(0, len(texts) - 1, bs):
    chunk = texts[start:start + bs]
    if len(chunk) < 2:
      break
    batch = {}
    for mode in ("reconstruction", "completion"):
      rng = np.random.default_rng(d.seed + start)
      exs = [stage1.build_example(tokenizer, [t], rng, opts, modes=[mode]) for t in chunk]
      batch[mode] = {k: np.stack([e[k] for e in exs]) for k in BATCH_KEYS}
    out.append(batch)
  return out


# ----------------------------------------------------------------------------- state


def _init_state(params, opt) -> TrainState:
  return TrainState(jnp.int32(0), params, opt.init(params))


def _checkpoint_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               item_names=("params", "opt_state", "data"), options=options)


def _abstract(tree, shardings=None):
  if shardings is None:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _init_from(path: str, spec, abstract_params, shardings):
  """Params of an earlier stage (Stage 1 -> Stage 2): its latest step, or a saved compiler."""
  spec_path, params_dir = compiler_ckpt.find(path)
  theirs = compiler_ckpt.spec_from_json(compiler_ckpt.read_spec(spec_path)["spec"], spec.backbone)
  if dataclasses.replace(theirs, remat=spec.remat) != spec:
    raise ValueError(f"{path}: its compiler spec differs from this config's; cannot continue from it.")
  return compiler_ckpt.restore_params(params_dir, _abstract(abstract_params, shardings))


# ----------------------------------------------------------------------------- loop


class MetricsWriter:
  """Appends JSON lines (flushed each write) and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._f = open(self.path, "a", buffering=1) if jax.process_index() == 0 else None
    self._tb = None
    if jax.process_index() == 0:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        logging.warning("tensorboardX not installed; metrics go to metrics.jsonl only.")

  def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
    if self._f is None:
      return
    self._f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(f"{kind}/{k}", v, step)

  def close(self):
    if self._f is not None:
      self._f.close()
    if self._tb is not None:
      self._tb.close()


def _host(x):
  x = np.asarray(jax.device_get(x))
  return x.item() if x.size == 1 else x.tolist()


# Jitted once at module level (spec and cfg are hashable), so every validation of a run
# reuses the compiled program instead of tracing a fresh lambda.
_eval_jit = jax.jit(eval_step, static_argnames=("spec", "cfg"))


def validate(params, bb, spec, step_cfg, val_batches, mesh) -> dict[str, float]:
  """Mean held-out loss per token with own / no / another document's adapter, per mode."""
  if not val_batches:
    return {}
  fn = lambda p, bp, b: _eval_jit(p, bp, b, spec=spec, cfg=step_cfg)
  sums: dict[str, dict[str, float]] = {}
  for batch in val_batches:
    for mode, arrays in batch.items():
      arrays = {k: put(v, mesh, ("batch", None)) for k, v in arrays.items() if k in BATCH_KEYS}
      if mesh is not None:
        with jax.set_mesh(mesh):
          out = fn(params, bb.params, arrays)
      else:
        out = fn(params, bb.params, arrays)
      acc = sums.setdefault(mode, {"own": 0.0, "none": 0.0, "other": 0.0, "count": 0.0})
      for k in acc:
        acc[k] += float(out[k])
  result = {}
  for mode, acc in sums.items():
    for cond in ("own", "none", "other"):
      result[f"{mode}/{cond}"] = acc[cond] / max(acc["count"], 1.0)
  return result


def train(config, workdir: str, mesh=None, max_steps: int | None = None) -> dict[str, Any]:
  """Runs (or resumes) training; returns the last logged metrics and validation results.

  max_steps stops early (as if the job were killed) without touching the schedule.
  """
  os.makedirs(workdir, exist_ok=True)
  t = config.train
  bb = backbone_from_config(config, mesh=mesh, seed=config.get("backbone_seed", 0))
  if bb.tokenizer is None:
    raise ValueError("training needs a tokenizer; the backbone has none.")
  spec = dataclasses.replace(spec_from_config(config, bb.config), remat=t.remat)
  compiler_ckpt.write_spec(workdir, spec, base_fingerprint(bb.config), bb.source)
  opt, sched = optim.make(t.lr, t.warmup_steps, t.steps, t.weight_decay, t.clip_norm)
  step_cfg = StepConfig(accum=t.accum, remat=t.remat, loss_chunk=t.loss_chunk)
  if t.batch_size % t.accum:
    raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of train.accum={t.accum}.")

  train_ds, val_batches = _datasets(config, bb.tokenizer)
  batches = pipeline.Batches(train_ds)

  params = init_params(spec, t.seed, mesh)
  state = _init_state(params, opt)
  shardings = state_shardings(mesh, state) if mesh is not None else None
  manager = _checkpoint_manager(workdir, t.keep_checkpoints, t.async_checkpointing)
  latest = manager.latest_step()
  if latest is not None:
    restored = manager.restore(latest, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(state.params, shardings and shardings.params)),
        opt_state=ocp.args.StandardRestore(_abstract(state.opt_state, shardings and shardings.opt_state)),
        data=ocp.args.JsonRestore()))
    state = TrainState(jnp.int32(restored.data["step"]), restored.params, restored.opt_state)
    batches.set_state(restored.data["iterator"])
    logging.info("resumed from %s at step %d", workdir, latest)
  elif config.get("init_from"):
    abstract = jax.eval_shape(lambda: state.params)
    state = _init_state(_init_from(config.init_from, spec, abstract,
                                   shardings.params if shardings else None), opt)
    logging.info("initialised compiler params from %s", config.init_from)

  step_fn = jax.jit(lambda s, b, bp: train_step(s, b, bp, spec=spec, cfg=step_cfg, optimizer=opt,
                                                schedule=sched),
                    donate_argnums=(0,),
                    **({} if mesh is None else dict(
                        in_shardings=(shardings, {k: shd.named_sharding(mesh, ("batch", None), (t.batch_size, 1))
                                                  for k in BATCH_KEYS},
                                      jax.tree.map(lambda x: x.sharding, bb.params)),
                        out_shardings=(shardings, None))))

  writer = MetricsWriter(workdir)
  start = int(jax.device_get(state.step))
  end = t.steps if max_steps is None else min(t.steps, max_steps)
  last: dict[str, Any] = {}
  bad_streak = 0
  bar = tqdm(total=t.steps, initial=start, desc=f"stage {config.stage}", unit="step",
             disable=jax.process_index() != 0 or not t.progress_bar)
  tick, tokens_since = time.perf_counter(), 0.0
  try:
    if start == 0 and val_batches and t.eval_every > 0:  # the untrained baseline of the curve
      writer.write(0, "val", validate(state.params, bb, spec, step_cfg, val_batches, mesh))
    for step in range(start, end):
      raw = next(batches)
      batch = {k: put(raw[k], mesh, ("batch", None)) for k in BATCH_KEYS}
      if mesh is not None:
        with jax.set_mesh(mesh):
          state, metrics = step_fn(state, batch, bb.params)
      else:
        state, metrics = step_fn(state, batch, bb.params)
      if int(metrics["skipped"]):
        bad_streak += 1
        logging.warning("step %d: non-finite loss or gradient; update skipped.", step + 1)
        if bad_streak >= t.max_bad_steps:
          raise NonFiniteLossError(
              f"{bad_streak} consecutive steps had non-finite loss/gradients (last at step {step + 1}); "
              "stopping without saving. Lower train.lr or check the data; the last good "
              "checkpoint is intact.")
      else:
        bad_streak = 0
      tokens_since += float(raw["segment_ids"].sum())
      done = step + 1
      bar.update(1)
      if done % t.log_every == 0 or done == end:
        elapsed = time.perf_counter() - tick
        host = {k: _host(v) for k, v in metrics.items()}
        ratio = host.pop("delta_w_ratio")
        host.update(tokens_per_s=tokens_since / max(elapsed, 1e-9),
                    delta_w_ratio_mean=float(np.mean(ratio)), delta_w_ratio_by_layer=ratio)
        writer.write(done, "train", host)
        bar.set_postfix(loss=f"{host['loss']:.3f}", tok_s=f"{host['tokens_per_s']:.0f}")
        last = host
        tick, tokens_since = time.perf_counter(), 0.0
      if val_batches and t.eval_every > 0 and (done % t.eval_every == 0 or done == t.steps):
        val = validate(state.params, bb, spec, step_cfg, val_batches, mesh)
        writer.write(done, "val", val)
        logging.info("step %d validation: %s", done, json.dumps({k: round(v, 4) for k, v in val.items()}))
        last = {**last, **{f"val/{k}": v for k, v in val.items()}}
      if done % t.save_every == 0 or done == t.steps:
        manager.save(done, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            data=ocp.args.JsonSave({"step": done, "iterator": batches.get_state()})))
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    bar.close()
  return {"step": int(jax.device_get(state.step)), "state": state, **last}

