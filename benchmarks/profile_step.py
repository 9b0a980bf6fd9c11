"""Where a Stage-1 train step (or a compile) spends its time: a jax.profiler trace of a few
calls, its XLA ops summed by the part of the model they belong to (the named scopes encode,
generator, carve, conversation, lm_head_loss, optimizer, metrics) and by direction (forward,
or backward: ops under a `transpose`).

  python -m benchmarks.profile_step --config=small [--what=step|compile] [--layers=0] [--t=256]

`--layers` / `--t` shrink the preset (0 = as the preset) for a quicker look. Op times on a
busy machine are noisy; the shares are what to read.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import presets
from lskill_jax.backbone import model
from lskill_jax.compiler import hypernet
from lskill_jax.training import optimizer as optim
from lskill_jax.training.step import StepConfig, TrainState, train_step_jit

flags.DEFINE_enum("config", "tiny", sorted(presets.PRESETS), "Harness preset.")
flags.DEFINE_enum("what", "step", ["step", "compile"], "Profile the train step or a compile.")
flags.DEFINE_integer("layers", 0, "Backbone layers (0 = the preset's).")
flags.DEFINE_integer("t", 256, "Document and conversation tokens.")
flags.DEFINE_integer("batch", 1, "Rows.")
flags.DEFINE_integer("calls", 2, "Profiled calls.")
flags.DEFINE_bool("remat", False, "Rematerialise decoder layers (off: the forward ops are "
                  "counted once).")
FLAGS = flags.FLAGS

PARTS = ("encode", "generator", "carve", "conversation", "lm_head_loss", "optimizer", "metrics")
_CONTROL = ("while", "conditional", "call")


def op_parts(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> 'part/direction' from its op_name metadata."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?(\w+)\(.*?op_name=\"([^\"]*)\"", hlo_text, re.M):
    name, opcode, op_name = m.groups()
    if opcode in _CONTROL:
      continue
    part = next((p for p in PARTS if p in op_name), "other")
    out[name] = f"{part}/{'backward' if 'transpose(' in op_name else 'forward'}"
  return out


def leaf_times(trace_file: str, parts: dict[str, str]) -> collections.Counter:
  """Microseconds per part/direction over the trace's XLA op events."""
  with gzip.open(trace_file) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  total = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in parts:
      total[parts[e["name"]]] += e["dur"]
  return total


def build():
  bc = presets.backbone_config(FLAGS.config)
  if FLAGS.layers:
    bc = dataclasses.replace(bc, num_layers=FLAGS.layers)
  spec = dataclasses.replace(presets.spec(FLAGS.config, remat=FLAGS.remat), backbone=bc)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  bp, params = model.init_params(k1, bc), hypernet.init(k2, spec)
  rng = np.random.RandomState(1)
  shape = (FLAGS.batch, FLAGS.t)
  docs = rng.randint(0, bc.vocab_size, shape).astype(np.int32)
  if FLAGS.what == "compile":
    fn = jax.jit(lambda p, b, t, m: hypernet.compile_lora(p, b, t, m, spec=spec))
    args = (params, bp, docs, np.ones_like(docs))
    return fn, lambda: fn(*args), args
  conv = rng.randint(0, bc.vocab_size, shape).astype(np.int32)
  batch = {"doc_tokens": docs, "doc_mask": np.ones_like(docs), "tokens": conv,
           "weights": np.ones(shape, np.float32), "segment_ids": np.ones_like(conv)}
  opt, sched = optim.make(1e-4, 10, 10_000)
  kw = dict(spec=spec, cfg=StepConfig(remat=FLAGS.remat), optimizer=opt, schedule=sched)
  state = [TrainState(jnp.int32(0), params, opt.init(params))]
  args = (state[0], batch, bp)
  text = train_step_jit.lower(*args, **kw).compile().as_text()

  def call():
    state[0], metrics = train_step_jit(state[0], batch, bp, **kw)
    return metrics
  return text, call, None


def main(argv):
  del argv
  fn, call, args = build()
  text = fn if isinstance(fn, str) else fn.lower(*args).compile().as_text()
  parts = op_parts(text)
  jax.block_until_ready(call())
  jax.block_until_ready(call())
  log_dir = tempfile.mkdtemp(prefix="profile_step_")
  jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
  for _ in range(FLAGS.calls):
    jax.block_until_ready(call())
  jax.profiler.stop_trace()
  trace = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True)[0]
  times = leaf_times(trace, parts)
  total = sum(times.values())
  print(f"{FLAGS.what}: preset {FLAGS.config}, layers {FLAGS.layers or 'as preset'}, T {FLAGS.t}, "
        f"batch {FLAGS.batch}, remat {FLAGS.remat}; XLA op time per call {total / FLAGS.calls / 1e6:.3f} s")
  for key, us in sorted(times.items(), key=lambda kv: -kv[1]):
    print(f"  {key:24s} {us / FLAGS.calls / 1e6:8.3f} s  {us / total:6.1%}")
  print(f"(trace: {trace})")


if __name__ == "__main__":
  app.run(main)
