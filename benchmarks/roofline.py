"""Roofline of the compile and the Stage-1 step on this machine: the matrix-product FLOPs each
side does, the machine's measured matrix-product rate, and the fastest either program could
therefore run.

  python -m benchmarks.roofline --config=small [--times=vs_small.json]
      [--src=LATENTSKILL_WORK_TREE --their_python=VENV/bin/python]

* Ours: FLOPs counted from the jaxprs (`lskill_jax.flops`) at the harness preset's shapes,
  without rematerialisation: the products the computation needs, not what a remat policy
  recomputes.
* Theirs (with --src / --their_python, defaults $LATENTSKILL_SRC / $LATENTSKILL_PYTHON):
  `benchmarks/their_flops.py` counts their harness's figures with torch's FLOP counter.
* Rate: the best of a large fp32 matrix product timed in JAX and in PyTorch (and bf16, for
  the opt-in lower-precision question), all threads. Time it on a quiet machine.
* --times: a `benchmarks.vs_authors --json_out` file; each figure's measured time (best of its
  rounds) then prints beside its floor, as the share of the rate each side reaches, and as
  the largest speed-up over theirs that our FLOPs allow at that rate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import at_preset, presets, vs_authors  # noqa: F401  (shared flags)
from benchmarks.common import machine, prefill_last
from lskill_jax.backbone import model
from lskill_jax.compiler import hypernet
from lskill_jax.flops import function_flops
from lskill_jax.training import optimizer as optim
from lskill_jax.training.step import StepConfig, TrainState, train_step_jit

flags.DEFINE_string("times", "", "A benchmarks.vs_authors --json_out file with measured times.")
flags.DEFINE_integer("gemm", 2048, "Side of the square matrix product that measures the rate.")
flags.DEFINE_integer("gemm_repeats", 5, "Timed products per library and dtype (best is used).")
FLAGS = flags.FLAGS

# (figure, where a vs_authors round keeps its time)
FIGURES = (("compile_b1", ("compile", "latency_b1_s")),
           ("compile_bN", ("compile", "latency_bN_s")),
           ("prefill", ("compile", "prefill_floor_b1_s")),
           ("step", ("train", "step_s")))


def _step_flops(spec, bp, params, remat: bool, d1, conv) -> int:
  spec = dataclasses.replace(spec, remat=remat)
  opt, sched = optim.make(1e-4, 10, 10_000)
  state = TrainState(jnp.int32(0), params, jax.eval_shape(opt.init, params))
  batch = {"doc_tokens": d1, "doc_mask": d1, "tokens": conv, "segment_ids": conv,
           "weights": jax.ShapeDtypeStruct(conv.shape, jnp.float32)}
  step = functools.partial(train_step_jit, spec=spec, cfg=StepConfig(remat=remat, loss_chunk=512),
                           optimizer=opt, schedule=sched)
  return function_flops(step, state, batch, bp)


def our_flops() -> dict[str, int]:
  """Matrix-product FLOPs of each figure at the preset's shapes (traced, nothing runs).

  "step" is the step without rematerialisation (the products it needs); "step_as_run" is the
  step as benchmarks.at_preset times it (--remat, on by default), recomputation included.
  """
  spec = presets.spec(FLAGS.config, remat=False)
  key = jax.random.PRNGKey(0)  # only the params' shapes are needed: nothing is allocated
  bp, params = jax.eval_shape(lambda: (model.init_params(key, spec.backbone),
                                       hypernet.init(key, spec)))
  tok = lambda b, t: jax.ShapeDtypeStruct((b, t), jnp.int32)
  d1, dN, conv = tok(1, FLAGS.t_doc), tok(FLAGS.compile_batch, FLAGS.t_doc), tok(1, FLAGS.t_conv)
  comp = lambda p, b, t: hypernet.compile_lora(p, b, t, jnp.ones(t.shape, jnp.int32), spec=spec)
  enc = lambda p, b, t: hypernet.encode_memory(p, b, t, jnp.ones(t.shape, jnp.int32), spec=spec)
  g = spec.geometry
  states = jax.ShapeDtypeStruct((1, spec.backbone.num_layers, g.memory_tokens,
                                 spec.backbone.hidden_size), jnp.float32)
  gen = lambda p, s: spec.generator().apply({"params": p["generator"]}, s)
  return {"compile_b1": function_flops(comp, params, bp, d1),
          "compile_bN": function_flops(comp, params, bp, dN),
          "encode": function_flops(enc, params, bp, d1),
          "generator": function_flops(gen, params, states),
          "prefill": function_flops(lambda b, t: prefill_last(b, spec.backbone, t), bp, d1),
          "step": _step_flops(spec, bp, params, False, d1, conv),
          "step_as_run": _step_flops(spec, bp, params, FLAGS.remat, d1, conv)}


def their_flops() -> dict[str, int] | None:
  if not (FLAGS.src and FLAGS.their_python):
    return None
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "their_flops.py")
  cmd = [FLAGS.their_python, script, f"--harness={FLAGS.harness}", f"--config={FLAGS.config}",
         f"--t_doc={FLAGS.t_doc}", f"--t_conv={FLAGS.t_conv}",
         f"--compile_batch={FLAGS.compile_batch}", f"--threads={FLAGS.threads}"]
  return vs_authors._run(cmd, {**os.environ, "LATENTSKILL_SRC": FLAGS.src})["flops"]


def _best_rate(fn, flops: float) -> float:
  fn()
  best = min(_timed(fn) for _ in range(FLAGS.gemm_repeats))
  return flops / best


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def gemm_rates() -> dict[str, float]:
  """FLOP/s of an n x n x n product, per library and dtype (all threads, best of repeats)."""
  import torch
  torch.set_num_threads(os.cpu_count())
  n = FLAGS.gemm
  flops = 2.0 * n ** 3
  rates = {}
  for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    a = jnp.asarray(np.random.RandomState(0).randn(n, n), dtype)
    dot = jax.jit(jnp.dot)
    rates[f"jax {name}"] = _best_rate(lambda: dot(a, a).block_until_ready(), flops)
    t = torch.from_numpy(np.random.RandomState(0).randn(n, n).astype(np.float32)).to(
        getattr(torch, name))
    rates[f"torch {name}"] = _best_rate(lambda: torch.mm(t, t), flops)
  return rates


def measured_times(path: str) -> dict[str, dict[str, float]]:
  """{side: {figure: best seconds over rounds}} from a vs_authors --json_out file."""
  with open(path) as f:
    rounds = json.load(f)
  out = {}
  for side in ("ours", "theirs"):
    out[side] = {}
    for fig, key in FIGURES:
      best = vs_authors.best(rounds.get(side, []), key, "lower")
      if best is not None:
        out[side][fig] = best
  return out


def main(argv):
  del argv
  ours = our_flops()
  theirs = their_flops()
  rates = gemm_rates()
  rate = max(v for k, v in rates.items() if k.endswith("float32"))
  times = measured_times(FLAGS.times) if FLAGS.times else {}
  print(f"machine: {machine()}; preset {FLAGS.config}, T_doc {FLAGS.t_doc}, "
        f"T_conv {FLAGS.t_conv}, compile batch {FLAGS.compile_batch}")
  for k, v in rates.items():
    print(f"matrix product {FLAGS.gemm}^3, {k:15s} {v / 1e9:7.1f} GFLOP/s")
  print(f"fp32 rate used for the floors: {rate / 1e9:.1f} GFLOP/s (the best above)")
  print(f"{'figure':11s} {'ours GFLOP':>10s} {'theirs':>8s} {'our floor s':>11s} "
        f"{'ours s':>7s} {'theirs s':>8s} {'ours/rate':>9s} {'theirs/rate':>11s} "
        f"{'max vs theirs':>13s}")
  report = {"machine": machine(), "config": FLAGS.config, "rates": rates, "ours": ours,
            "theirs": theirs, "times": times, "rows": {}}
  for fig in ("compile_b1", "compile_bN", "encode", "generator", "prefill", "step"):
    o, t = ours[fig], (theirs or {}).get(fig)
    floor = o / rate
    ot, tt = times.get("ours", {}).get(fig), times.get("theirs", {}).get(fig)
    row = {"ours_gflop": o / 1e9, "theirs_gflop": t / 1e9 if t else None, "floor_s": floor,
           "ours_s": ot, "theirs_s": tt,
           "ours_share_of_rate": floor / ot if ot else None,
           "theirs_share_of_rate": t / rate / tt if (t and tt) else None,
           "max_speedup_vs_theirs": tt / floor if tt else None}
    report["rows"][fig] = row
    cell = lambda v, f: format(v, f) if v is not None else "-"
    print(f"{fig:11s} {o / 1e9:10.1f} {cell(t and t / 1e9, '8.1f'):>8s} {floor:11.3f} "
          f"{cell(ot, '7.3f'):>7s} {cell(tt, '8.3f'):>8s} "
          f"{cell(row['ours_share_of_rate'], '9.0%'):>9s} "
          f"{cell(row['theirs_share_of_rate'], '11.0%'):>11s} "
          f"{cell(row['max_speedup_vs_theirs'], '12.2f'):>12s}x")
  if FLAGS.remat:
    print(f"ours as timed (remat): the step does {ours['step_as_run'] / 1e9:.1f} GFLOP, "
          f"{ours['step_as_run'] / ours['step'] - 1:.0%} more than it needs; the shares above "
          f"count only what it needs")
  print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
  app.run(main)
