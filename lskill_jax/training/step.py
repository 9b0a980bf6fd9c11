"""The jitted training and evaluation steps.

`train_step(state, batch, backbone_params)` compiles one adapter per example, mounts it on the
frozen backbone, and takes one AdamW step on the compiler's params only, accumulating
gradients over `accum` micro-batches (token-weighted). With `contrastive_weight` it also
scores each conversation with another document's adapter and rewards the margin (beyond the
paper); with `distill_weight` it adds context distillation: KL from the frozen backbone
reading the document in its context to the adapter-mounted backbone without it, on the
conversation's target tokens (as Doc-to-LoRA trains); with `target_weighting="context_gain"`
target tokens count by how much the document helps predict them. `loss` always reports the
language-model loss alone (with the target weights in use). A step whose loss or gradient is
not finite leaves params and optimizer state unchanged and reports `skipped = 1`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lskill_jax import sharding as shd
from lskill_jax.compiler import hypernet
from lskill_jax.compiler.hypernet import CompilerSpec
from lskill_jax.training.losses import context_gain_weights, lm_loss, teacher_hidden

BATCH_KEYS = ("doc_tokens", "doc_mask", "tokens", "weights", "segment_ids")
SOURCE_KEY = "source"  # optional [B] int: which corpus a Stage-1 example came from (data.mix)
TARGET_WEIGHTINGS = ("uniform", "context_gain")  # StepConfig.target_weighting
FREEZABLE = ("memory", "metalora", "generator")  # StepConfig.frozen
CONTRASTIVE_NEGATIVES = ("previous", "same_source")  # StepConfig.contrastive_negatives


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
  accum: int = 1          # micro-batches per optimizer step
  remat: bool = True
  loss_chunk: int = 512
  # Beyond the paper: weight of a term that rewards each conversation's own adapter over the
  # adapter of another document of the micro-batch (see `contrastive_term`); 0 = off.
  contrastive_weight: float = 0.0
  contrastive_temperature: float = 0.1  # nats/token; the reward saturates past a few of these
  # Whose adapter scores a row in that term: "previous" (the row before it, cyclically) or
  # "same_source" (the nearest earlier row from the same corpus, by the batch's `source`; the
  # previous row where none is): with data.mix interleaved evenly, "previous" pairs every
  # example with one of the other corpus, a difference of style that is learnt at once.
  contrastive_negatives: str = "previous"
  # Weight of the context-distillation KL (nats/token, like the language-model loss); 0 = off.
  distill_weight: float = 0.0
  # "uniform": every target token counts once; "context_gain": tokens count by how much
  # reading the document helps the frozen backbone predict them (`context_gain_weights`).
  target_weighting: str = "uniform"
  # Compiler param groups (of FREEZABLE) held fixed. Their gradient is never formed, so the
  # backward pass skips whatever only they need: with "memory" and "metalora" both frozen the
  # document encode runs forward only. The optimizer must leave them alone too
  # (`optimizer.make(frozen=...)`): Adam's momentum and weight decay move a leaf without a gradient.
  frozen: tuple[str, ...] = ()


def batch_keys(batch) -> tuple[str, ...]:
  """The keys of a training batch that the step reads: BATCH_KEYS, and SOURCE_KEY if present."""
  return BATCH_KEYS + ((SOURCE_KEY,) if SOURCE_KEY in batch else ())


def _lora(a, b):
  return {t: {"a": a[t], "b": b[t]} for t in a}


def _delta_ratio(a, b, scale, layer_w_norms):
  """Mean over rows and targets of ‖s·A·B‖_F / ‖W‖_F, per layer: [L].

  ‖AB‖²_F = tr((AᵀA)(BBᵀ)) uses only r×r products, so this costs nothing next to the step.
  """
  ratios = []
  for t in a:
    ata = jnp.einsum("lbir,lbis->lbrs", a[t], a[t])
    bbt = jnp.einsum("lbro,lbso->lbrs", b[t], b[t])
    fro = jnp.sqrt(jnp.maximum(jnp.einsum("lbrs,lbsr->lb", ata, bbt), 0.0)) * scale
    ratios.append(jnp.mean(fro, axis=1) / layer_w_norms[t])
  return jnp.mean(jnp.stack(ratios), axis=0)


def weight_norms(backbone_params, targets) -> dict[str, jax.Array]:
  """‖W‖_F per layer for each LoRA target: {target: [L]}."""
  return {t: jnp.sqrt(jnp.sum(jnp.square(backbone_params["layers"][t].astype(jnp.float32)),
                              axis=(1, 2))) for t in targets}


def _rolled(a, b):
  """Row i gets row i-1's adapter (factors are [L, B, ...])."""
  roll = lambda x: jnp.roll(x, 1, axis=1)
  return _lora(jax.tree.map(roll, a), jax.tree.map(roll, b))


def negative_rows(source: jax.Array) -> jax.Array:
  """For each row of a micro-batch, the row whose adapter scores it in the contrastive term.

  source: [B] ints (which corpus each row came from). Row i gets the nearest earlier row j
  (cyclically: i-1, i-2, ..., wrapping around) with source[j] == source[i], and row i-1 where
  no other row shares its source; with one source throughout that is row i-1 for every row,
  as `_rolled` pairs them. Returns [B] int32.
  """
  n = source.shape[0]
  i = jnp.arange(n)
  back = (i[:, None] - i[None, :]) % n            # how far back row j lies from row i
  back = jnp.where(back == 0, 2 * n, back)        # the row itself: after every other row
  cost = jnp.where(source[:, None] == source[None, :], back, back + n)
  return jnp.argmin(cost, axis=1).astype(jnp.int32)


def _taken(a, b, rows):
  """Row i gets row rows[i]'s adapter (factors are [L, B, ...])."""
  take = lambda x: jnp.take(x, rows, axis=1)
  return _lora(jax.tree.map(take, a), jax.tree.map(take, b))


def contrastive_term(own_rows, other_rows, counts, temperature):
  """Σ_i n_i · τ · softplus(-(other_i - own_i) / τ), with per-token mean losses per row.

  A smooth hinge on "own adapter beats another document's by a margin of a few τ": at a gap
  of 0 it pushes each row's own loss down and the other adapter's loss up with half the
  weight of the language-model loss (per token), and it fades once the gap is well past τ, so
  it cannot keep rewarding adapters that merely hurt other documents. Weighted by target
  tokens so it normalises like the language-model loss.
  """
  n = jnp.maximum(counts, 1.0)
  gap = (other_rows - own_rows) / n
  return jnp.sum(jnp.where(counts > 0, n * temperature * jax.nn.softplus(-gap / temperature), 0.0)), gap


def _micro_loss(params, backbone_params, mb, spec: CompilerSpec, cfg: StepConfig, w_norms):
  params = {k: jax.lax.stop_gradient(v) if k in cfg.frozen else v for k, v in params.items()}
  a, b = hypernet.compile_lora(params, backbone_params, mb["doc_tokens"], mb["doc_mask"], spec=spec)
  by_gain = cfg.target_weighting == "context_gain"
  teacher = (teacher_hidden(backbone_params, spec.backbone, mb["doc_tokens"], mb["doc_mask"],
                            mb["tokens"], mb["segment_ids"]) if cfg.distill_weight or by_gain else None)
  weights = (context_gain_weights(backbone_params, spec.backbone, mb["tokens"], mb["segment_ids"],
                                  mb["weights"], teacher, cfg.loss_chunk) if by_gain else mb["weights"])
  args = (backbone_params, spec.backbone, mb["tokens"], mb["segment_ids"], weights)
  own = lm_loss(*args, _lora(a, b), spec.scale, remat=cfg.remat, chunk=cfg.loss_chunk,
                per_row=True, teacher_h=teacher if cfg.distill_weight else None)
  own_rows, counts = own[0], own[-1]
  lm = jnp.sum(own_rows)
  total, gap_sum, kl_sum = lm, jnp.float32(0), jnp.float32(0)
  if cfg.distill_weight:
    kl_sum = jnp.sum(own[1])
    total = total + cfg.distill_weight * kl_sum
  if cfg.contrastive_weight:
    source = mb.get(SOURCE_KEY)
    other = (_taken(a, b, negative_rows(source))
             if cfg.contrastive_negatives == "same_source" and source is not None else _rolled(a, b))
    other_rows, _ = lm_loss(*args, other, spec.scale, remat=cfg.remat,
                            chunk=cfg.loss_chunk, per_row=True)
    term, gap = contrastive_term(own_rows, other_rows, counts, cfg.contrastive_temperature)
    total = total + cfg.contrastive_weight * term
    gap_sum = jnp.sum(jax.lax.stop_gradient(gap) * counts)
  ratio = _delta_ratio(jax.lax.stop_gradient(a), jax.lax.stop_gradient(b), spec.scale, w_norms)
  return total, (jnp.sum(counts), ratio, lm, gap_sum, jax.lax.stop_gradient(kl_sum))


def train_step(state: TrainState, batch: dict, backbone_params, *, spec: CompilerSpec,
               cfg: StepConfig, optimizer: optax.GradientTransformation, schedule):
  """One optimizer step over `batch` ([accum · micro, ...] arrays). Returns (state, metrics)."""
  with jax.named_scope("metrics"):
    w_norms = weight_norms(backbone_params, spec.targets)
  micro = jax.tree.map(lambda x: x.reshape(cfg.accum, -1, *x.shape[1:]),
                       {k: batch[k] for k in batch_keys(batch)})
  grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

  def accumulate(carry, mb):
    objective_sum, lm_sum, gap_sum, kl_sum, count_sum, ratio_sum, grads = carry
    (objective, (count, ratio, lm, gap, kl)), g = grad_fn(state.params, backbone_params, mb,
                                                          spec, cfg, w_norms)
    grads = jax.tree.map(jnp.add, grads, g)
    return (objective_sum + objective, lm_sum + lm, gap_sum + gap, kl_sum + kl,
            count_sum + count, ratio_sum + ratio, grads), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  f0 = jnp.float32(0)
  init = (f0, f0, f0, f0, f0, jnp.zeros((spec.backbone.num_layers,), jnp.float32), zeros)
  (objective_sum, lm_sum, gap_sum, kl_sum, count, ratio_sum, grads), _ = jax.lax.scan(
      accumulate, init, micro)
  denom = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  loss = lm_sum / denom
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(objective_sum) & jnp.isfinite(grad_norm)
  with jax.named_scope("optimizer"):  # labels the ops in profiles and HLO dumps
    updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(state.step + 1, keep(new_params, state.params), keep(new_opt, state.opt_state))
  metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step),
             "target_tokens": count, "skipped": (~finite).astype(jnp.int32),
             "delta_w_ratio": ratio_sum / cfg.accum,
             **({"objective": objective_sum / denom}
                if cfg.contrastive_weight or cfg.distill_weight else {}),
             **({"train_gap": gap_sum / denom} if cfg.contrastive_weight else {}),
             **({"distill_kl": kl_sum / denom} if cfg.distill_weight else {}),
             **{f"grad_norm_{k}": optax.global_norm(g) for k, g in grads.items()}}
  return new_state, metrics


def eval_step(params, backbone_params, batch: dict, *, spec: CompilerSpec, cfg: StepConfig):
  """Held-out loss sums per row ([B] each) with the compiled adapter ('own'), no adapter
  ('none'), and the adapter compiled from the previous row's document ('other'); the target
  count per row; and the between-document variance of the factors (scalars)."""
  a, b = hypernet.compile_lora(params, backbone_params, batch["doc_tokens"], batch["doc_mask"], spec=spec)
  args = (backbone_params, spec.backbone, batch["tokens"], batch["segment_ids"], batch["weights"])
  loss = lambda lora, coef: lm_loss(*args, lora, coef, remat=False, chunk=cfg.loss_chunk, per_row=True)
  own, count = loss(_lora(a, b), spec.scale)
  none, _ = loss(None, 0.0)
  other, _ = loss(_rolled(a, b), spec.scale)
  between, total = _between_document_variance((a, b))
  return {"own": own, "none": none, "other": other, "count": count,
          "between": between, "total": total}


def _between_document_variance(factors) -> tuple[jax.Array, jax.Array]:
  """(Σ squared deviation from the batch-mean adapter, Σ squares) over all generated factors.

  Their ratio is the share of the adapters that differs between documents: large but random
  for a fresh compiler, then driven down by training (random document dependence only costs
  loss); near zero, the adapters no longer depend on their document.
  """
  between = total = jnp.float32(0)
  for x in jax.tree.leaves(factors):  # [L, B, ...]
    x = x.astype(jnp.float32)
    between += jnp.sum(jnp.square(x - x.mean(axis=1, keepdims=True)))
    total += jnp.sum(jnp.square(x))
  return between, total


# ----------------------------------------------------------------------------- shardings


def state_shardings(mesh, state: TrainState):
  """Shardings of the train state: params by their logical axes; every params-shaped subtree of
  the optimizer state (Adam moments) like the params; everything else (counts) replicated."""
  p_sh = shd.tree_shardings(mesh, hypernet.param_logical_axes(state.params), state.params)
  params_def = jax.tree.structure(state.params)
  is_params_like = lambda x: jax.tree.structure(x) == params_def
  opt_sh = jax.tree.map(lambda x: p_sh if is_params_like(x) else shd.replicated(mesh),
                        state.opt_state, is_leaf=is_params_like)
  return TrainState(shd.replicated(mesh), p_sh, opt_sh)


def constrain_state(state: TrainState) -> TrainState:
  """Inside a jitted function: the train state constrained as `state_shardings` places it."""
  p_axes = hypernet.param_logical_axes(state.params)
  params_def = jax.tree.structure(state.params)
  is_params_like = lambda x: jax.tree.structure(x) == params_def
  opt = jax.tree.map(lambda x: shd.constrain_outputs(x, p_axes) if is_params_like(x)
                     else shd.constrain(x, (None,) * x.ndim), state.opt_state, is_leaf=is_params_like)
  return TrainState(shd.constrain(state.step, ()), shd.constrain_outputs(state.params, p_axes), opt)


@functools.partial(jax.jit, static_argnames=("spec", "cfg", "optimizer", "schedule"),
                   donate_argnums=(0,))
def train_step_jit(state: TrainState, batch: dict, backbone_params, *, spec: CompilerSpec,
                   cfg: StepConfig, optimizer: optax.GradientTransformation, schedule):
  """`train_step`, jitted (the state donated); the new state keeps the state's shardings."""
  state, metrics = train_step(state, batch, backbone_params, spec=spec, cfg=cfg,
                              optimizer=optimizer, schedule=schedule)
  return constrain_state(state), metrics


@functools.partial(jax.jit, static_argnames=("spec", "cfg"))
def eval_step_jit(params, backbone_params, batch: dict, *, spec: CompilerSpec, cfg: StepConfig):
  """`eval_step`, jitted; per-row values sharded by batch, the scalars replicated."""
  out = eval_step(params, backbone_params, batch, spec=spec, cfg=cfg)
  return shd.constrain_outputs(out, {k: ("batch",) if out[k].ndim else () for k in out})
