"""Overhead of a mounted adapter: base vs unmerged vs merged, prefill and decode, one run.

  python -m benchmarks.adapter [--model=smollm2-135m] [--rank=8]

Targets: unmerged decode within 10% of base; merged equal to base.
"""

from __future__ import annotations

from absl import app, flags
import jax
import numpy as np

import lskill_jax as lsj
from benchmarks.common import best_of, machine

flags.DEFINE_string("model", "smollm2-135m", "Backbone.")
flags.DEFINE_integer("rank", 8, "Adapter rank (all seven targets, all layers).")
flags.DEFINE_integer("prompt_len", 512, "Prefill length.")
flags.DEFINE_integer("new_tokens", 64, "Decode steps.")
flags.DEFINE_list("decode_batches", ["1", "8"], "Decode batch sizes.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (best is reported).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  bb = lsj.load_backbone(FLAGS.model, tokenizer=False)
  cfg = bb.config
  rng = np.random.RandomState(0)
  shapes = cfg.projection_shapes()
  ad = lsj.Adapter.from_factors(
      {t: 0.01 * rng.randn(cfg.num_layers, s[0], FLAGS.rank).astype(np.float32) for t, s in shapes.items()},
      {t: 0.01 * rng.randn(cfg.num_layers, FLAGS.rank, s[1]).astype(np.float32) for t, s in shapes.items()},
      1.0, base_fingerprint=lsj.adapter.base_fingerprint(cfg))
  merged = ad.merged(bb, 0.7)
  engines = {"base": (bb, None), "unmerged": (bb, ad), "merged": (merged, None)}
  V, P, N = cfg.vocab_size, FLAGS.prompt_len, FLAGS.new_tokens
  results: dict[tuple[str, int], dict[str, float]] = {}

  prompt = rng.randint(0, V, (1, P))
  results[("prefill", 1)] = {
      name: P / best_of(lambda b=b, a=a: jax.block_until_ready(lsj.forward(b, prompt, adapter=a, alpha=0.7)),
                        FLAGS.repeats)
      for name, (b, a) in engines.items()}
  for batch in (int(x) for x in FLAGS.decode_batches):
    prompts = rng.randint(0, V, (batch, 32)).tolist()
    row = {}
    for name, (b, a) in engines.items():
      def gen(n, b=b, a=a):
        return lambda: lsj.generate_ids(b, prompts, max_new_tokens=n, stop_ids=(), adapter=a, alpha=0.7)
      row[name] = batch * N / (best_of(gen(N + 1), FLAGS.repeats) - best_of(gen(1), FLAGS.repeats))
    results[("decode", batch)] = row

  print(f"machine: {machine()}")
  print(f"model: {FLAGS.model}, adapter rank {FLAGS.rank} on all 7 targets x {cfg.num_layers} layers")
  print(f"{'phase':8s} {'batch':>5s} {'base tok/s':>10s} {'unmerged':>9s} {'merged':>8s} "
        f"{'unmerged/base':>13s} {'merged/base':>11s}")
  for (phase, batch), r in results.items():
    print(f"{phase:8s} {batch:5d} {r['base']:10.1f} {r['unmerged']:9.1f} {r['merged']:8.1f} "
          f"{r['unmerged'] / r['base']:13.2f} {r['merged'] / r['base']:11.2f}")


if __name__ == "__main__":
  app.run(main)
