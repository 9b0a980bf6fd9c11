"""The training loop for both stages: data, jitted steps, validation, metrics, Orbax checkpoints.

    metrics = train(config, workdir)     # config: configs/stage{1,2}_*.py

Workdir layout: compiler.json (what `SkillCompiler.load(workdir, backbone)` reads),
checkpoints/<step>/{params,opt_state,data}/ (Orbax, async, keep-N; `data` holds the step and
the Grain iterator state), metrics.jsonl (one line per logged step and per validation), tb/ (TensorBoard).
Resuming picks the latest complete step; an interrupted save leaves only a temporary folder
that Orbax ignores, so the previous checkpoint stays the latest. A resume first compares the
config with the workdir's config.json / compiler.json (`run_config.check_resume`) and writes
nothing if it differs in a way not allowed; a non-finite state is never saved.

Several processes (one per host, the mesh spanning them all): train.batch_size is the global
batch, each process builds only the rows its devices hold, process 0 writes the workdir's own
files, and every process writes its shards of each checkpoint (the workdir must be shared).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from tqdm import tqdm

from lskill_jax import sharding as shd
from lskill_jax.adapter.adapter import base_fingerprint
from lskill_jax.compiler import checkpoint as compiler_ckpt
from lskill_jax.compiler import shipped
from lskill_jax.compiler.hypernet import calibrate
from lskill_jax.compiler.skill_compiler import init_params, spec_from_config
from lskill_jax.data import pipeline
from lskill_jax.experiment import backbone_from_config
from lskill_jax.training import optimizer as optim
from lskill_jax.training import run_config
from lskill_jax.training.datasets import make_datasets
from lskill_jax.training.step import (StepConfig, TrainState, batch_keys, state_shardings,
                                      train_step_jit)
from lskill_jax.training.validation import validate


class NonFiniteLossError(RuntimeError):
  """Training produced non-finite losses for too many consecutive steps."""


# ----------------------------------------------------------------------------- state


class StopOnSignal:
  """SIGTERM / SIGINT become a request to save after the current step and stop.

  A job scheduler's preemption or a Ctrl-C then costs no steps; a second signal stops at
  once (the last saved checkpoint stays intact). Handlers are installed only from the main
  thread, where Python delivers signals.
  """

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:
      raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without saving")
    self.received = signal.Signals(signum).name
    logging.warning("%s received: saving after this step, then stopping (send it again to stop "
                    "at once).", self.received)

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def _init_state(params, opt) -> TrainState:
  return TrainState(jnp.int32(0), params, opt.init(params))


@jax.jit
def _finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack([jnp.isfinite(x).all() for x in leaves]).all() if leaves else jnp.bool_(True)


def _checkpoint_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               item_names=("params", "opt_state", "data"), options=options)


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


# Spec fields that change neither the parameters nor what they compute: how long a document
# may be (a limit, not a shape) and whether activations are recomputed.
_FREE_ON_INIT = ("context_len", "remat")


def _init_from(path: str, spec, abstract_params, shardings):
  """Params of an earlier run (Stage 1 -> Stage 2, or a warm start): its latest step, a saved
  compiler, or a shipped one."""
  spec_path, params_dir = compiler_ckpt.find(path)
  theirs = compiler_ckpt.spec_from_json(compiler_ckpt.read_spec(spec_path)["spec"], spec.backbone)
  differ = {k: v for k, v in compiler_ckpt.spec_differences(theirs, spec).items()
            if k not in _FREE_ON_INIT}
  if differ:
    listed = "; ".join(f"compiler.{k}: {a!r} there, {b!r} here" for k, (a, b) in differ.items())
    raise run_config.ConfigError(
        f"init_from={path}: its compiler differs from this config's ({listed}); set these "
        "fields as that run had them, or train from scratch without init_from.")
  return shipped.load_params(params_dir, abstract_params, shardings)


def _global_batch(raw: dict, keys, mesh, batch_size: int) -> dict:
  """This process's rows of a batch -> global arrays [batch_size, ...] sharded over the mesh."""
  out = {}
  for k in keys:
    shape = (batch_size, *raw[k].shape[1:])
    axes = ("batch",) + (None,) * (len(shape) - 1)
    out[k] = jax.make_array_from_process_local_data(
        shd.named_sharding(mesh, axes, shape), raw[k], shape)
  return out


def _calibrated(params, bb, spec, train_ds, docs: int, mesh, shardings, batch_size: int):
  """Fresh params with the memory-state statistics measured on the first training evidence.

  Reads a separate iterator over the training data, so the run's own data order is untouched.
  """
  it, batches, seen = pipeline.Batches(train_ds), [], 0
  while seen < max(docs, 2):
    g = _global_batch(next(it), ("doc_tokens", "doc_mask"), mesh, batch_size)
    batches.append((g["doc_tokens"], g["doc_mask"]))
    seen += batch_size
  logging.info("calibrating memory-state statistics on %d training examples", seen)
  with jax.set_mesh(mesh):
    params = calibrate(params, bb.params, batches, spec=spec)
  return jax.device_put(params, shardings)


# ----------------------------------------------------------------------------- loop


class MetricsWriter:
  """Appends JSON lines (flushed each write) and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._f = open(self.path, "a", buffering=1) if jax.process_index() == 0 else None
    if self._f is not None and self._f.tell():
      with open(self.path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":  # a kill mid-line: keep the next line apart from the fragment
          self._f.write("\n")
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
  x = shd.to_host(x)
  return x.item() if x.size == 1 else x.tolist()


def optimizer_from_config(t):
  """(optimizer, schedule) as a config's `train` section sets them."""
  return optim.make(t.lr, t.warmup_steps, t.steps, t.weight_decay, t.clip_norm,
                    memory_lr_scale=t.get("memory_lr_scale", 1.0),
                    clip_per_group=t.get("clip_per_group", False), frozen=run_config.frozen_groups(t))


def step_config_from_config(t) -> StepConfig:
  """The train step's options as a config's `train` section sets them."""
  return StepConfig(accum=t.accum, remat=t.remat, loss_chunk=t.loss_chunk,
                    contrastive_weight=t.get("contrastive_weight", 0.0),
                    contrastive_temperature=t.get("contrastive_temperature", 0.1),
                    contrastive_negatives=t.get("contrastive_negatives", "previous"),
                    distill_weight=t.get("distill_weight", 0.0),
                    target_weighting=t.get("target_weighting", "uniform"),
                    frozen=run_config.frozen_groups(t))


def train(config, workdir: str, mesh=None, max_steps: int | None = None,
          allow_changes: Sequence[str] = (), backbone=None) -> dict[str, Any]:
  """Runs (or resumes) training; returns the last logged metrics and validation results.

  max_steps stops early (saving that step) without touching the schedule. allow_changes names
  the config fields a resume may change (see `run_config.check_resume`). backbone: the one
  `backbone_from_config(config)` gives, already loaded on `mesh` (saves loading it twice).
  """
  run_config.check_values(config)
  if "://" in workdir:
    raise ValueError(
        f"workdir {workdir!r}: the trainer writes its workdir with ordinary file I/O; mount the "
        "bucket on every host (Cloud Storage FUSE) and pass the mounted path instead.")
  mesh = shd.mesh_or_default(mesh)
  if jax.process_count() > 1 and not mesh.is_multi_process:
    raise ValueError(f"training in {jax.process_count()} processes needs a mesh over all their "
                     "devices: pass --mesh (or set config.mesh), e.g. data=-1.")
  primary = jax.process_index() == 0  # one process writes the run's own files; Orbax syncs its own
  os.makedirs(workdir, exist_ok=True)
  t = config.train
  bb = backbone or backbone_from_config(config, mesh=mesh, seed=config.get("backbone_seed", 0))
  if bb.tokenizer is None:
    raise ValueError("training needs a tokenizer; the backbone has none.")
  spec = dataclasses.replace(spec_from_config(config, bb.config), remat=t.remat)
  ckpts = os.path.join(workdir, "checkpoints")
  resuming = os.path.isdir(ckpts) and compiler_ckpt.latest_step(ckpts) is not None
  changes = run_config.check_resume(workdir, config, spec, base_fingerprint(bb.config),
                                    allow_changes) if resuming else {}
  if jax.process_count() > 1:  # every process has read the old config before one rewrites it
    multihost_utils.sync_global_devices("lskill_jax.train: config checked")
  if not resuming and primary:
    compiler_ckpt.write_spec(workdir, spec, base_fingerprint(bb.config), bb.source)
    run_config.write(workdir, config)
  opt, sched = optimizer_from_config(t)
  step_cfg = step_config_from_config(t)

  # Each process builds only the rows of every global batch that its devices hold.
  rows = shd.process_rows(
      shd.named_sharding(mesh, ("batch", None), (t.batch_size, 1)), (t.batch_size, 1))
  train_ds, val_batches = make_datasets(config, bb.tokenizer, rows=rows)
  batches = pipeline.Batches(train_ds)

  params = init_params(spec, t.seed, mesh)
  state = _init_state(params, opt)
  shardings = state_shardings(mesh, state)
  manager = _checkpoint_manager(workdir, t.keep_checkpoints, t.async_checkpointing)
  latest = manager.latest_step()
  if latest is not None:
    try:
      restored = manager.restore(latest, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(state.params, shardings.params)),
          opt_state=ocp.args.StandardRestore(_abstract(state.opt_state, shardings.opt_state)),
          data=ocp.args.JsonRestore()))
    except ValueError as e:
      if "tree structures do not match" not in str(e):
        raise
      raise run_config.ConfigError(
          f"{workdir}: step {latest}'s params or optimizer state do not fit what this config builds"
          f"{f' with the changes {sorted(changes)}' if changes else ''} (e.g. train.memory_lr_scale "
          "turned on or off changes the optimizer's state). Start a new workdir from that step "
          f"instead: --config.init_from={os.path.join(ckpts, str(latest))} (fresh optimizer and "
          "schedule).") from e
    state = TrainState(jnp.int32(restored.data["step"]), restored.params, restored.opt_state)
    batches.set_state(restored.data["iterator"])
    if resuming and primary:  # only now that the checkpoint fits the new config
      compiler_ckpt.write_spec(workdir, spec, base_fingerprint(bb.config), bb.source)
      run_config.record(workdir, config, changes, latest)
    logging.info("resumed from %s at step %d%s", workdir, latest,
                 f" with changes {sorted(changes)}" if changes else "")
  elif config.get("init_from"):
    abstract = jax.eval_shape(lambda: state.params)
    params = _init_from(config.init_from, spec, abstract, shardings.params)
    logging.info("initialised compiler params from %s", config.init_from)
    if config.get("init_recalibrate", False):  # that run's statistics describe its own documents
      params = _calibrated(params, bb, spec, train_ds, t.get("calibration_docs", 64), mesh,
                           shardings.params, t.batch_size)
    state = _init_state(params, opt)
  elif spec.state_norm == "standardize":
    state = _init_state(_calibrated(state.params, bb, spec, train_ds, t.get("calibration_docs", 64),
                                    mesh, shardings.params, t.batch_size), opt)

  state = jax.device_put(state, shardings)  # where the jitted step keeps it

  writer = MetricsWriter(workdir)
  start = int(jax.device_get(state.step))
  end = t.steps if max_steps is None else min(t.steps, max_steps)
  last: dict[str, Any] = {}
  bad_streak = 0
  bar = tqdm(total=t.steps, initial=start, desc=f"stage {config.stage}", unit="step",
             disable=jax.process_index() != 0 or not t.progress_bar)
  tick, tokens_since = time.perf_counter(), 0.0
  with StopOnSignal() as stop:
    try:
      if start == 0 and val_batches and t.eval_every > 0:  # the untrained baseline of the curve
        writer.write(0, "val", validate(state.params, bb, spec, step_cfg, val_batches, mesh))
      for step in range(start, end):
        raw = next(batches)
        batch = _global_batch(raw, batch_keys(raw), mesh, t.batch_size)
        with jax.set_mesh(mesh):
          state, metrics = train_step_jit(state, batch, bb.params, spec=spec, cfg=step_cfg,
                                          optimizer=opt, schedule=sched)
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
        # raw holds this process's rows only; several processes count the global batch.
        tokens_since += float(raw["segment_ids"].sum() if jax.process_count() == 1
                              else jnp.sum(batch["segment_ids"]))
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
        if done % t.save_every == 0 or done in (t.steps, end) or stop.received:
          if not bool(_finite((state.params, state.opt_state))):
            manager.wait_until_finished()
            raise NonFiniteLossError(
                f"step {done}: the parameters or optimizer state hold NaN or inf; not saving them. "
                f"The last saved checkpoint (step {manager.latest_step()}) is intact; lower train.lr "
                "or check the data, then rerun to resume from it.")
          manager.save(done, args=ocp.args.Composite(
              params=ocp.args.StandardSave(state.params),
              opt_state=ocp.args.StandardSave(state.opt_state),
              data=ocp.args.JsonSave({"step": done, "iterator": batches.get_state()})))
        if stop.received:
          logging.warning("stopped on %s after saving step %d; rerun the same command to resume.",
                          stop.received, done)
          last = {**last, "stopped_by": stop.received}
          break
    finally:
      manager.wait_until_finished()
      manager.close()
      writer.close()
      bar.close()
  return {"step": int(jax.device_get(state.step)), "state": state, **last}

