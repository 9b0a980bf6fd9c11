"""A plain LoRA trained directly on Stage-2 conversations: the cost-matched baseline of the
compiler (same targets and rank as its adapters, no compiler, no skill text anywhere).

    adapter, losses = train_on_config(bb, stage2_config, rank=8, targets=("o", "down"),
                                      steps=100, batch_size=4, lr=1e-3, workdir=DIR)

The LoRA is a pytree {target: {"a": [L, d_in, r], "b": [L, r, d_out]}} (A small random,
B zero, so it starts as no update), trained with the Stage-2 loss (`losses.lm_loss`, on the
assistant turns) and AdamW; the backbone stays frozen. With a `workdir` the run shows a
progress bar, appends its losses to WORKDIR/metrics.jsonl, saves every `save_every` steps (LoRA,
optimizer state, data position; Orbax) and resumes from its last save when rerun; SIGTERM or
Ctrl-C saves and raises `TrainingStopped`.
"""

from __future__ import annotations

import functools
import os
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

from lskill_jax.adapter.adapter import Adapter, base_fingerprint
from lskill_jax.data import pipeline
from lskill_jax.training.datasets import make_datasets
from lskill_jax.training.losses import lm_loss
from lskill_jax.training.trainer import MetricsWriter, StopOnSignal


class TrainingStopped(Exception):
  """Training was stopped by a signal (after saving, with a workdir; rerunning resumes it)."""

  def __init__(self, signal_name: str, step: int, saved: bool):
    super().__init__(f"plain LoRA stopped on {signal_name} after "
                     + (f"saving step {step}; rerun to resume it." if saved else f"step {step}."))
    self.signal_name, self.step, self.saved = signal_name, step, saved


def init_lora(cfg, rank: int, targets: Sequence[str], seed: int = 0) -> dict:
  """{target: {"a": [L, d_in, r] ~ N(0, 1/d_in), "b": zeros [L, r, d_out]}}."""
  shapes, layers = cfg.projection_shapes(), cfg.num_layers
  keys = jax.random.split(jax.random.key(seed), len(targets))
  return {t: {"a": jax.random.normal(k, (layers, shapes[t][0], rank)) / jnp.sqrt(shapes[t][0]),
              "b": jnp.zeros((layers, rank, shapes[t][1]))} for t, k in zip(targets, keys)}


def loss_fn(lora, backbone_params, batch, *, cfg, scale: float, chunk: int,
            remat: bool = True) -> jax.Array:
  """Mean cross-entropy per target token with the LoRA mounted at `scale`. `remat`
  recomputes each layer in the backward pass instead of keeping its activations: the same
  numbers; without it a step over 4 x 1024 tokens of SmolLM2 held 16.8 GB resident."""
  total, count = lm_loss(backbone_params, cfg, batch["tokens"], batch["segment_ids"],
                         batch["weights"], lora, jnp.float32(scale), remat=remat, chunk=chunk)
  return total / jnp.maximum(count, 1.0)


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer", "scale", "chunk"))
def train_step(lora, opt_state, batch, backbone_params, *, cfg, optimizer, scale, chunk):
  """One AdamW step on the LoRA only: (lora, opt_state, loss)."""
  loss, grads = jax.value_and_grad(loss_fn)(lora, backbone_params, batch, cfg=cfg, scale=scale,
                                            chunk=chunk)
  updates, opt_state = optimizer.update(grads, opt_state, lora)
  return optax.apply_updates(lora, updates), opt_state, loss


def _manager(workdir: str) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               item_names=("lora", "opt_state", "data"), options=options)


def train(bb, batches: Iterator[dict], *, rank: int, targets: Sequence[str], steps: int,
          lr: float, seed: int = 0, scale: float = 1.0, chunk: int = 512,
          workdir: str | None = None, save_every: int = 10, show_progress: bool = True
          ) -> tuple[Adapter, list[float]]:
  """Trains a LoRA for `steps` batches; returns it as an Adapter and the loss of every step.

  With `workdir`, resumes from its last save; `batches` then needs get_state/set_state
  (`pipeline.Batches`) so that a resumed run reads the batches the stopped one had not.
  """
  optimizer = optax.adamw(lr, weight_decay=0.0)
  lora = init_lora(bb.config, rank, tuple(targets), seed)
  opt_state = optimizer.init(lora)
  losses: list[float] = []
  manager = _manager(workdir) if workdir else None
  if manager is not None and manager.latest_step() is not None:
    abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        lora=ocp.args.StandardRestore(abstract(lora)),
        opt_state=ocp.args.StandardRestore(abstract(opt_state)),
        data=ocp.args.JsonRestore()))
    lora, opt_state, losses = restored.lora, restored.opt_state, list(restored.data["losses"])
    if restored.data.get("iterator") is not None:
      batches.set_state(restored.data["iterator"])
  writer = MetricsWriter(workdir) if workdir else None
  bar = tqdm(total=steps, initial=len(losses), desc="plain LoRA", unit="step",
             disable=not show_progress)
  try:
    with StopOnSignal() as stop:
      for done in range(len(losses) + 1, steps + 1):
        raw = next(batches)
        batch = {k: jnp.asarray(raw[k]) for k in ("tokens", "segment_ids", "weights")}
        lora, opt_state, loss = train_step(lora, opt_state, batch, bb.params, cfg=bb.config,
                                           optimizer=optimizer, scale=scale, chunk=chunk)
        losses.append(float(loss))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if writer is not None:
          writer.write(done, "train", {"loss": losses[-1]})
        if manager is not None and (done % save_every == 0 or done == steps or stop.received):
          state = batches.get_state() if hasattr(batches, "get_state") else None
          manager.save(done, args=ocp.args.Composite(
              lora=ocp.args.StandardSave(lora), opt_state=ocp.args.StandardSave(opt_state),
              data=ocp.args.JsonSave({"step": done, "losses": losses, "iterator": state})))
        if stop.received:
          if manager is not None:
            manager.wait_until_finished()
          raise TrainingStopped(stop.received, done, saved=manager is not None)
  finally:
    bar.close()
    if writer is not None:
      writer.close()
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
  adapter = Adapter.from_factors({t: v["a"] for t, v in lora.items()},
                                 {t: v["b"] for t, v in lora.items()}, scale,
                                 base_fingerprint=base_fingerprint(bb.config),
                                 producer="lskill_jax.training.plain_lora")
  return adapter, losses


def train_on_config(bb, stage2_config, *, rank: int, targets: Sequence[str], steps: int,
                    batch_size: int, lr: float, seed: int = 0, workdir: str | None = None,
                    show_progress: bool = True) -> tuple[Adapter, list[float]]:
  """`train` on the training records of a Stage-2 config (its held-out records left out)."""
  cfg = stage2_config.copy_and_resolve_references()
  cfg.train.batch_size = batch_size
  train_ds, _ = make_datasets(cfg, bb.tokenizer)
  return train(bb, pipeline.Batches(train_ds), rank=rank, targets=targets, steps=steps, lr=lr,
               seed=seed, chunk=cfg.train.loss_chunk, workdir=workdir, show_progress=show_progress)
