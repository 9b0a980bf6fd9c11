"""Compile latency and throughput vs one backbone prefill of the same text (the physical floor).

  python -m benchmarks.compile [--config=configs/smollm2_135m.py] [--doc_tokens=512] [--batch=8]

Compiling = one encode pass over document + M memory slots (no LM head) + the generator.
Prints seconds per skill (one document), skills/s batched, and XLA's peak temporary memory of
each program, next to a plain prefill (forward with logits) of the same tokens.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags
import jax
import numpy as np

import lskill_jax as lsj
from benchmarks.common import best_of, machine
from lskill_jax.backbone import model
from lskill_jax.compiler import hypernet

config_flags.DEFINE_config_file("config", "configs/smollm2_135m.py", "Compiler config file.")
flags.DEFINE_integer("doc_tokens", 512, "Document length in tokens.")
flags.DEFINE_integer("batch", 8, "Documents per batched compile.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (best is reported).")
flags.DEFINE_enum("dtype", "", ["", "float32", "bfloat16"], "Override the config's dtype.")
FLAGS = flags.FLAGS




def _temp_bytes(fn, *args) -> float:
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  return getattr(stats, "temp_size_in_bytes", float("nan")) if stats else float("nan")


def main(argv):
  del argv
  c = FLAGS.config
  if FLAGS.dtype:
    c.dtype = FLAGS.dtype
  bb = lsj.backbone_from_config(c)
  comp = lsj.SkillCompiler.create(bb, c, seed=0)
  spec, T = comp.spec, FLAGS.doc_tokens
  rng = np.random.RandomState(0)
  rows = {}
  for B in (1, FLAGS.batch):
    tokens = rng.randint(0, bb.config.vocab_size, (B, T)).astype(np.int32)
    mask = np.ones_like(tokens)
    compile_fn = lambda p, bp, t, m: hypernet.compile_lora(p, bp, t, m, spec=spec)
    prefill_fn = lambda bp, t: model.forward(bp, bb.config, t)
    c_jit, p_jit = jax.jit(compile_fn), jax.jit(prefill_fn)
    t_compile = best_of(lambda: jax.block_until_ready(c_jit(comp.params, bb.params, tokens, mask)),
                        FLAGS.repeats)
    t_prefill = best_of(lambda: jax.block_until_ready(p_jit(bb.params, tokens)), FLAGS.repeats)
    rows[B] = (t_compile, t_prefill, _temp_bytes(compile_fn, comp.params, bb.params, tokens, mask),
               _temp_bytes(prefill_fn, bb.params, tokens))
  g = spec.geometry
  print(f"machine: {machine()}")
  print(f"backbone {c.model} ({c.dtype}), document {T} tokens + M={g.memory_tokens} memory slots, "
        f"generator depth {spec.generator_depth}")
  print(f"{'batch':>5s} {'compile s':>10s} {'prefill s':>10s} {'ratio':>6s} {'skills/s':>9s} "
        f"{'compile MiB':>12s} {'prefill MiB':>12s}")
  for B, (tc, tp, mc, mp) in rows.items():
    print(f"{B:5d} {tc:10.3f} {tp:10.3f} {tc / tp:6.2f} {B / tc:9.2f} {mc / 2**20:12.1f} {mp / 2**20:12.1f}")
  print("(MiB: XLA's peak temporary buffers of each program, weights and inputs excluded)")


if __name__ == "__main__":
  app.run(main)
