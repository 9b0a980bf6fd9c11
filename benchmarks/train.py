"""Train-step throughput (target tokens/s and all tokens/s) for a stage-1 config, and, on an
accelerator, model FLOPs utilisation against the device's peak.

  python -m benchmarks.train --config=configs/stage1_tiny.py
  python -m benchmarks.train --config=configs/stage1_smollm2_135m.py --seq_len=512 --batch=2

The peer is the backbone's own forward+backward over the same tokens without the compiler
(a plain LoRA-free fine-tuning step would cost about this), measured in the same run. The step
is the config's own (contrastive term, frozen groups and the rest of `train`).

  python -m benchmarks.train --config=configs/stage1_smollm2_135m_cpu.py --ab='train.frozen=("memory", "metalora")'

also times the step with those fields changed, alternating the two (best of each), and prints
their ratio.
"""

from __future__ import annotations

import ast
import dataclasses
import time

from absl import app, flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

import lskill_jax as lsj
from benchmarks.common import best_of, machine
from lskill_jax.flops import function_flops
from lskill_jax.training.losses import lm_loss
from lskill_jax.training.step import TrainState, train_step
from lskill_jax.training.trainer import optimizer_from_config, step_config_from_config

config_flags.DEFINE_config_file("config", "configs/stage1_tiny.py", "Stage-1 config file.")
flags.DEFINE_integer("seq_len", 0, "Override data.seq_len (and context_len).")
flags.DEFINE_integer("batch", 0, "Override train.batch_size (accum 1).")
flags.DEFINE_integer("repeats", 3, "Timed repeats.")
flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for MFU (0 = skip).")
flags.DEFINE_multi_string("ab", [], "FIELD=VALUE override of the config (a dotted field, a Python "
                          "literal; repeat the flag for several) for a second step timed "
                          "alternately with the first, e.g. --ab=train.remat=True.")
FLAGS = flags.FLAGS


def _changed(config, overrides):
  """A copy of config with each "a.b=literal" of overrides applied."""
  out = config.copy_and_resolve_references()
  for item in overrides:
    field, _, value = item.partition("=")
    *parents, name = field.strip().split(".")
    node = out
    for p in parents:
      node = node[p]
    if name not in node:
      raise app.UsageError(f"--ab {item!r}: the config has no field {field!r}.")
    node[name] = ast.literal_eval(value.strip())
  return out


def _step_fn(c, comp):
  """A jitted train step as config c sets it, and its initial state."""
  opt, sched = optimizer_from_config(c.train)
  cfg = step_config_from_config(c.train)
  step = jax.jit(lambda s, b, bp: train_step(s, b, bp, spec=comp.spec, cfg=cfg, optimizer=opt,
                                             schedule=sched))
  return step, TrainState(jnp.int32(0), comp.params, opt.init(comp.params))


def model_flops(c, comp, state, batch, backbone_params) -> int:
  """Matrix-product FLOPs of one step as config c sets it, without rematerialisation (the
  products the step needs, not those a remat policy recomputes)."""
  opt, sched = optimizer_from_config(c.train)
  cfg = dataclasses.replace(step_config_from_config(c.train), remat=False)
  spec = dataclasses.replace(comp.spec, remat=False)
  step = lambda s, b, bp: train_step(s, b, bp, spec=spec, cfg=cfg, optimizer=opt, schedule=sched)
  return function_flops(step, state, batch, backbone_params)


def main(argv):
  del argv
  c = FLAGS.config
  if FLAGS.seq_len:
    c.data.seq_len = c.data.context_len = FLAGS.seq_len
  if FLAGS.batch:
    c.train.batch_size, c.train.accum = FLAGS.batch, 1
  bb = lsj.backbone_from_config(c)
  comp = lsj.SkillCompiler.create(bb, c, seed=0)
  B, T, Tc = c.train.batch_size, c.data.seq_len, c.data.context_len
  rng = np.random.RandomState(0)
  batch = {"doc_tokens": rng.randint(0, bb.config.vocab_size, (B, Tc)).astype(np.int32),
           "doc_mask": np.ones((B, Tc), np.int32),
           "tokens": rng.randint(0, bb.config.vocab_size, (B, T)).astype(np.int32),
           "weights": np.ones((B, T), np.float32), "segment_ids": np.ones((B, T), np.int32)}
  step, state = _step_fn(c, comp)
  if FLAGS.ab:
    step_b, state_b = _step_fn(_changed(c, FLAGS.ab), comp)
    run_a = lambda: jax.block_until_ready(step(state, batch, bb.params))
    run_b = lambda: jax.block_until_ready(step_b(state_b, batch, bb.params))
    run_a(), run_b()  # compile both
    times = {"a": [], "b": []}
    for _ in range(FLAGS.repeats):
      for key, run in (("a", run_a), ("b", run_b)):
        tick = time.perf_counter()
        run()
        times[key].append(time.perf_counter() - tick)
    t_step, t_b = min(times["a"]), min(times["b"])
    print(f"with {', '.join(FLAGS.ab)}: {t_b:.3f} s per step against {t_step:.3f} s "
          f"({t_step / t_b:.2f}x; alternating, best of {FLAGS.repeats}: a {times['a']}, b {times['b']})")
  else:
    t_step = best_of(lambda: jax.block_until_ready(step(state, batch, bb.params)), FLAGS.repeats)

  # Peer: backbone forward+backward over the same tokens, gradient w.r.t. the backbone input.
  def plain(bp, tokens):
    def f(embed):
      p = {**bp, "embed": embed}
      total, n = lm_loss(p, bb.config, tokens, batch["segment_ids"], batch["weights"], None, 0.0,
                         remat=c.train.remat, chunk=c.train.loss_chunk)
      return total / n
    return jax.grad(f)(bp["embed"])
  peer = jax.jit(plain)
  t_peer = best_of(lambda: jax.block_until_ready(peer(bb.params, batch["tokens"])), FLAGS.repeats)

  g = comp.spec.geometry
  flops = model_flops(c, comp, state, batch, bb.params)
  print(f"machine: {machine()}")
  print(f"config {c.name}: batch {B} x (conversation {T} + document {Tc} + {g.memory_tokens} memory) tokens")
  print(f"train step: {t_step:.3f} s = {B * T / t_step:,.0f} conversation tokens/s "
        f"({B * (T + Tc) / t_step:,.0f} tokens/s counting documents)")
  print(f"peer (backbone fwd+bwd over the conversation only): {t_peer:.3f} s; "
        f"step / peer = {t_step / t_peer:.2f}")
  print(f"model FLOPs: {flops / 1e12:.3f} TFLOP per step (matrix products, counted from the "
        f"step's jaxpr without remat) = {flops / t_step / 1e12:.3f} TFLOP/s")
  if FLAGS.peak_tflops:
    print(f"MFU {flops / t_step / (FLAGS.peak_tflops * 1e12):.1%} of {FLAGS.peak_tflops} TFLOP/s")


if __name__ == "__main__":
  app.run(main)
