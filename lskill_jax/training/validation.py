"""The signal that the compiler works: loss with its own adapter vs none vs another document's.

    result = validate(params, backbone, spec, step_cfg, batches, mesh)
    results = evaluate_checkpoint(config, workdir, step=300, splits=("train", "val"), docs=32)

Keys are "<mode>/<own|none|other>" (mode: reconstruction, completion, or stage2), each the mean
loss per target token, and "<mode>/adapter_doc_share": the share of the generated factors'
squared entries that differs between the documents of a batch. `own` well below `none` says the
adapters help; `own` below `other` says they carry their own document rather than a generic
skill-document prior. Measuring on the training split as well as the held-out one separates
"cannot encode documents" from "encodes the documents it has seen but does not yet generalise".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax
import numpy as np

from lskill_jax import sharding as shd
from lskill_jax.compiler.skill_compiler import SkillCompiler, spec_from_config
from lskill_jax.data import stage1
from lskill_jax.data.chat import tokenize_conversation
from lskill_jax.experiment import backbone_from_config
from lskill_jax.inference import forward
from lskill_jax.training.datasets import eval_batches
from lskill_jax.training.step import BATCH_KEYS, StepConfig, eval_step_jit

CONDITIONS = ("own", "none", "other")
MODES = ("reconstruction", "completion")
DOC_SHARE = "adapter_doc_share"  # share of the adapters' squared entries that differs between documents

def paired_interval(diffs, level: float = 0.95, resamples: int = 10_000, seed: int = 0):
  """(mean, low, high): a percentile-bootstrap interval for the mean of paired differences."""
  diffs = np.asarray(diffs, np.float64)
  if diffs.size < 2:
    return float(diffs.mean()) if diffs.size else float("nan"), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = diffs[rng.integers(0, diffs.size, (resamples, diffs.size))].mean(axis=1)
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(diffs.mean()), float(low), float(high)


def validate(params, bb, spec, step_cfg, batches, mesh=None) -> dict[str, float]:
  """Mean loss per target token with own / no / another document's adapter, per mode.

  Also, per mode, the paired per-document differences `other - own` and `none - own` (each a
  document's mean loss per token): "<mode>/gap_other" with "<mode>/gap_other_low" / "_high"
  (a 95% bootstrap interval), the same for "gap_none", and "<mode>/docs".
  """
  if not batches:
    return {}
  mesh = shd.mesh_or_default(mesh, bb.mesh)
  sums: dict[str, dict[str, float]] = {}
  rows: dict[str, dict[str, list]] = {}
  for batch in batches:
    for mode, arrays in batch.items():
      arrays = {k: shd.put(v, mesh, ("batch", None)) for k, v in arrays.items() if k in BATCH_KEYS}
      with jax.set_mesh(mesh):
        out = eval_step_jit(params, bb.params, arrays, spec=spec, cfg=step_cfg)
      # Per-row values: split across processes when the batch spans hosts.
      out = {k: shd.to_host(v).astype(np.float64) for k, v in out.items()}
      acc = sums.setdefault(mode, dict.fromkeys(CONDITIONS + ("count", "between", "total"), 0.0))
      for k in acc:
        acc[k] += float(out[k].sum())
      per_doc = rows.setdefault(mode, {c: [] for c in CONDITIONS})
      has_targets = out["count"] > 0
      for c in CONDITIONS:
        per_doc[c].extend((out[c] / np.maximum(out["count"], 1.0))[has_targets])
  results = {}
  for mode, acc in sums.items():
    results.update({f"{mode}/{cond}": acc[cond] / max(acc["count"], 1.0) for cond in CONDITIONS})
    results[f"{mode}/{DOC_SHARE}"] = acc["between"] / max(acc["total"], 1e-30)
    per_doc = {c: np.asarray(v) for c, v in rows[mode].items()}
    results[f"{mode}/docs"] = int(per_doc["own"].size)
    for name in ("other", "none"):
      mean, low, high = paired_interval(per_doc[name] - per_doc["own"])
      results.update({f"{mode}/gap_{name}": mean, f"{mode}/gap_{name}_low": low,
                      f"{mode}/gap_{name}_high": high})
  return results


def checkpoint_compiler(config, workdir: str, step: int | None = None, mesh=None) -> SkillCompiler:
  """The compiler of a saved step of a training run (default: its latest) on its backbone."""
  ckpts = os.path.join(workdir, "checkpoints")
  where = workdir if step is None else os.path.join(ckpts, str(step))
  if step is not None and not os.path.isdir(os.path.join(where, "params")):
    have = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) if os.path.isdir(ckpts) else []
    raise FileNotFoundError(f"{workdir}: no checkpoint for step {step}; saved steps: {have}.")
  bb = backbone_from_config(config, mesh=mesh, seed=config.get("backbone_seed", 0))
  comp = SkillCompiler.load(where, bb)
  if dataclasses.replace(comp.spec, remat=False) != dataclasses.replace(
      spec_from_config(config, bb.config), remat=False):
    raise ValueError(f"{workdir}: its compiler differs from this config's; pass the run's own "
                     "config (the config.json that launch.train wrote there).")
  return comp


def evaluate_checkpoint(config, workdir: str, step: int | None = None, splits=("val",),
                        docs: int | None = None, mesh=None) -> dict[str, dict[str, float]]:
  """`validate` for a saved step of a training run (default: its latest): {split: results}."""
  comp = checkpoint_compiler(config, workdir, step, mesh)
  cfg = StepConfig(accum=1, remat=False, loss_chunk=config.train.loss_chunk)
  results = {}
  for split, batches in eval_batches(config, comp.backbone.tokenizer, tuple(splits), docs).items():
    if not batches:
      raise ValueError(f"no {split} documents to evaluate on (need at least two).")
    results[split] = validate(comp.params, comp.backbone, comp.spec, cfg, batches, mesh)
  return results


def loss_matrix(compiler: SkillCompiler, texts: Sequence[str], *, alpha: float = 1.0,
                mode: str = "reconstruction") -> np.ndarray:
  """Mean loss per token of each text with each text's adapter: float64 [N + 1, N].

  Row i, column j: the loss of text j's Stage-1 conversation (the `mode` marker, then the
  text as the assistant's turn) with text i's compiled adapter mounted at `alpha`; the last
  row is the plain backbone. A compiler that carries its documents has the smallest entry of
  each column on the diagonal, and the diagonal below the last row. For completion the
  adapters are compiled from each text with its last 20% of words cut.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  texts = [t.strip() for t in texts]
  if len(texts) < 2 or not all(texts):
    raise ValueError("loss_matrix needs at least two non-empty texts.")
  marker = stage1.RECONSTRUCTION if mode == "reconstruction" else stage1.COMPLETION
  convs = [tokenize_conversation(compiler.backbone.tokenizer, [
      {"role": "user", "content": marker}, {"role": "assistant", "content": t}]) for t in texts]
  T = max(len(ids) for ids, _ in convs)
  tokens = np.zeros((len(texts), T), np.int32)
  weights = np.zeros((len(texts), T), np.float64)
  segments = np.zeros((len(texts), T), np.int32)
  for j, (ids, w) in enumerate(convs):
    tokens[j, :len(ids)], weights[j, :len(ids)], segments[j, :len(ids)] = ids, w, 1
  rng = np.random.default_rng(0)
  evidence = [t if mode == "reconstruction" else stage1.cut_words(t, rng, 0.2, 0.2) for t in texts]
  adapters = compiler.compile(evidence, overlong="truncate") + [None]
  out = np.zeros((len(adapters), len(texts)))
  for i, adapter in enumerate(adapters):
    logits = forward(compiler.backbone, tokens, segment_ids=segments, adapter=adapter, alpha=alpha)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    target = np.take_along_axis(np.asarray(logp), tokens[:, 1:, None], axis=-1)[..., 0]
    w = weights[:, 1:]
    out[i] = -(target * w).sum(axis=1) / w.sum(axis=1)
  return out


def cut_at_paragraphs(text: str, count, budget: int) -> str:
  """The leading paragraphs of `text` that fit `budget` tokens (`count(str) -> int`), so a long
  skill can be measured whole-paragraph within a compiler's and conversation's length."""
  kept = []
  for para in text.split("\n\n"):
    if count("\n\n".join(kept + [para])) > budget:
      break
    kept.append(para)
  return "\n\n".join(kept)


def cut_at_tokens(text: str, tokenizer, budget: int) -> str:
  """The text of `text`'s first `budget` tokens. Documents cut to one length compare their
  adapters on content alone: cut at paragraphs, a short document's adapter also carries less of
  what every document's adapter supplies, which shows as a negative own-vs-other gap."""
  ids = tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
  return tokenizer.decode(ids).rstrip("\ufffd")  # a cut inside a character leaves half of it


CUTS = ("paragraph", "token")


def cut_document(text: str, tokenizer, budget: int, at: str = "paragraph") -> str:
  """`text` cut to `budget` tokens of `tokenizer`: at the last whole paragraph that fits
  (`cut_at_paragraphs`) or at exactly token `budget` (`cut_at_tokens`)."""
  if at == "token":
    return cut_at_tokens(text, tokenizer, budget)
  if at != "paragraph":
    raise ValueError(f"cut at {at!r}: must be one of {CUTS}.")
  return cut_at_paragraphs(text, lambda t: len(tokenizer(t)["input_ids"]), budget)


def matrix_gaps(matrix: np.ndarray) -> dict[str, float]:
  """Summary of a `loss_matrix` [N + 1, N]: does each document's own adapter beat the others'?

  own / none: mean diagonal and plain-backbone loss; other: mean over documents of the mean
  loss under the other N - 1 documents' adapters; gap_other (with _low, _high: a 95% bootstrap
  interval) and gap_none: mean paired differences other - own and none - own; positive: how
  many documents have other - own > 0 (all N is the strict criterion).
  """
  m = np.asarray(matrix, np.float64)
  n = m.shape[1]
  if m.shape != (n + 1, n) or n < 2:
    raise ValueError(f"matrix must be [N + 1, N] with N >= 2 (a loss_matrix), got {m.shape}.")
  own, none = np.diag(m[:n]), m[n]
  other = (m[:n].sum(0) - own) / (n - 1)
  gap, low, high = paired_interval(other - own)
  return {"docs": n, "own": float(own.mean()), "none": float(none.mean()),
          "other": float(other.mean()), "gap_other": gap, "gap_other_low": low,
          "gap_other_high": high, "gap_none": float((none - own).mean()),
          "positive": int((other > own).sum())}
