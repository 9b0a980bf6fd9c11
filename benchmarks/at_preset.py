"""Our compile, prefill floor and Stage-1 step at one of the authors' harness presets, timed as
that harness times theirs (fp32, warm-up, median of `iters`), with the same figure names.

  python -m benchmarks.at_preset --config=tiny [--phases=compile,train] [--breakdown]

Run one per process: the peak RSS it reports is the whole process's. The last line printed
is one JSON object (benchmarks.vs_authors reads it).
"""

from __future__ import annotations

import json
import resource
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import presets
from benchmarks.common import machine, prefill_last
from lskill_jax.compiler import hypernet
from lskill_jax.training import optimizer as optim
from lskill_jax.training.losses import lm_loss
from lskill_jax.training.step import StepConfig, TrainState, _micro_loss, train_step_jit, weight_norms

flags.DEFINE_enum("config", "tiny", sorted(presets.PRESETS), "Harness preset.")
flags.DEFINE_integer("t_doc", 256, "Document tokens.")
flags.DEFINE_integer("t_conv", 256, "Conversation tokens.")
flags.DEFINE_integer("compile_batch", 4, "Documents in the batched compile.")
flags.DEFINE_integer("warmup", 1, "Untimed calls after the first (XLA compile) call.")
flags.DEFINE_integer("iters", 5, "Timed calls; the median is reported.")
flags.DEFINE_list("phases", ["compile", "train"], "compile and/or train.")
flags.DEFINE_bool("remat", True, "Rematerialise decoder layers in the backward pass (the "
                  "library's training default; on CPU it is also the faster choice).")
flags.DEFINE_bool("breakdown", False, "Also time the parts (encode, generator, forward, grad).")
flags.DEFINE_string("compile_cache", "", "Persistent XLA compilation cache directory: a warm one "
                    "skips code generation, whose memory otherwise counts in the peak RSS.")
FLAGS = flags.FLAGS


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn) -> tuple[float, list[float]]:
  """(median, all) seconds of fn() after one first call and FLAGS.warmup more."""
  jax.block_until_ready(fn())
  for _ in range(FLAGS.warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(FLAGS.iters):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times), times


def compile_figures(spec, bp, params, docs1, docsB) -> dict:
  ones1, onesB = np.ones_like(docs1), np.ones_like(docsB)
  comp = jax.jit(lambda p, b, t, m: hypernet.compile_lora(p, b, t, m, spec=spec))
  lat1, lat1_all = timed(lambda: comp(params, bp, docs1, ones1))
  latB, latB_all = timed(lambda: comp(params, bp, docsB, onesB))
  pre = jax.jit(lambda b, t: prefill_last(b, spec.backbone, t))
  pre_s, _ = timed(lambda: pre(bp, docs1))
  out = {"latency_b1_s": lat1, "latency_b1_all_s": lat1_all, "batch": docsB.shape[0],
         "latency_bN_s": latB, "latency_bN_all_s": latB_all,
         "throughput_docs_per_s": docsB.shape[0] / latB, "throughput_b1_docs_per_s": 1 / lat1,
         "prefill_floor_b1_s": pre_s, "compile_over_prefill": lat1 / pre_s}
  if FLAGS.breakdown:
    enc = jax.jit(lambda p, b, t, m: hypernet.encode_memory(p, b, t, m, spec=spec))
    states = enc(params, bp, docs1, ones1)
    gen = jax.jit(lambda p, s: spec.generator().apply({"params": p["generator"]}, s))
    out["b1_breakdown_s"] = {"encode": timed(lambda: enc(params, bp, docs1, ones1))[0],
                             "generator": timed(lambda: gen(params, states))[0]}
  return out


def train_figures(spec, bp, params, batch) -> dict:
  opt, sched = optim.make(1e-4, 10, 10_000)
  cfg = StepConfig(remat=FLAGS.remat, loss_chunk=512)
  # The step donates its state: copy the params when the breakdown still needs them.
  own = jax.tree.map(jnp.array, params) if FLAGS.breakdown else params
  state = [TrainState(jnp.int32(0), own, opt.init(own))]

  def step():  # the state is donated: carry the new one
    state[0], metrics = train_step_jit(state[0], batch, bp, spec=spec, cfg=cfg, optimizer=opt,
                                       schedule=sched)
    return metrics["loss"]

  step_s, step_all = timed(step)
  out = {"step_s": step_s, "step_all_s": step_all, "tokens_per_step": FLAGS.t_doc + FLAGS.t_conv,
         "tokens_per_s": (FLAGS.t_doc + FLAGS.t_conv) / step_s,
         "loss_last": float(step())}
  if FLAGS.breakdown:  # backbone params as arguments: closed over, XLA would fold them in
    w = weight_norms(bp, spec.targets)
    loss = lambda p, b: _micro_loss(p, b, batch, spec, cfg, w)[0]
    fwd, grad = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
    conv = jax.jit(lambda b, a_, b_: lm_loss(b, spec.backbone, batch["tokens"], batch["segment_ids"],
                                             batch["weights"], {t: {"a": a_[t], "b": b_[t]} for t in a_},
                                             spec.scale, remat=FLAGS.remat)[0])
    a, b = jax.jit(lambda p, b: hypernet.compile_lora(p, b, batch["doc_tokens"], batch["doc_mask"],
                                                      spec=spec))(params, bp)
    out["breakdown_s"] = {"forward": timed(lambda: fwd(params, bp))[0],
                          "forward_backward": timed(lambda: grad(params, bp))[0],
                          "conversation_forward_only": timed(lambda: conv(bp, a, b))[0]}
  return out


def main(argv):
  del argv
  if FLAGS.compile_cache:
    jax.config.update("jax_compilation_cache_dir", FLAGS.compile_cache)
  spec, bp, params = presets.build(FLAGS.config, remat=FLAGS.remat)
  rng = np.random.RandomState(1)
  V = spec.backbone.vocab_size
  docs1 = rng.randint(0, V, (1, FLAGS.t_doc)).astype(np.int32)
  docsB = rng.randint(0, V, (FLAGS.compile_batch, FLAGS.t_doc)).astype(np.int32)
  conv = rng.randint(0, V, (1, FLAGS.t_conv)).astype(np.int32)
  res = {"side": "lskill_jax", "config": FLAGS.config, "t_doc": FLAGS.t_doc, "t_conv": FLAGS.t_conv,
         "num_mem_token": spec.geometry.memory_tokens, "remat": FLAGS.remat, "machine": machine(),
         "compile_cache": bool(FLAGS.compile_cache),
         "rss_peak_mib": {"after_build": peak_rss_mib()}}
  if "compile" in FLAGS.phases:
    res["compile"] = compile_figures(spec, bp, params, docs1, docsB)
    res["rss_peak_mib"]["after_compile"] = peak_rss_mib()
  if "train" in FLAGS.phases:
    batch = {"doc_tokens": docs1, "doc_mask": np.ones_like(docs1), "tokens": conv,
             "weights": np.ones(conv.shape, np.float32), "segment_ids": np.ones_like(conv)}
    res["train"] = train_figures(spec, bp, params, batch)
    res["rss_peak_mib"]["after_train"] = peak_rss_mib()
  res["rss_peak_mib"]["final"] = peak_rss_mib()
  print(json.dumps(res, separators=(",", ":")))


if __name__ == "__main__":
  app.run(main)
