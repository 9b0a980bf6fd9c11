"""Prefill and decode throughput of the backbone port vs transformers (PyTorch), same run.

  python -m benchmarks.backbone [--model=smollm2-135m] [--prompt_len=512] [--new_tokens=64] \
      [--attn=sdpa] [--prefill_batches=1,8] [--decode_prompt_len=1024]

Prints tokens/s for each engine and the ratio ours / torch, with the machine, the torch and
transformers versions, the attention implementation the peer actually ran and its weights'
dtype named. Prefill is like for like: both engines compute the logits of the last position
only (transformers' `logits_to_keep=1`). Decode throughput is (generate N+1 tokens) -
(generate 1 token), so prefill is excluded. The peer is whatever transformers this
environment has; `benchmarks.vs_authors` compares against the authors' pinned one.
"""

from __future__ import annotations

import functools
import json
import os

from absl import app, flags
import jax
import numpy as np
import torch

import lskill_jax as lsj
from benchmarks.common import best_of, machine, prefill_last
from lskill_jax.backbone.loading import resolve_source

flags.DEFINE_string("model", "smollm2-135m", "Backbone (GGUF path, HF dir, or embedded name).")
flags.DEFINE_integer("prompt_len", 512, "Prefill length.")
flags.DEFINE_integer("new_tokens", 64, "Decode steps.")
flags.DEFINE_list("prefill_batches", ["1"], "Batch sizes for prefill.")
flags.DEFINE_list("decode_batches", ["1", "8"], "Batch sizes for decode.")
flags.DEFINE_integer("decode_prompt_len", 32, "Prompt length before the timed decode steps (the "
                     "KV cache they read grows with it; an agent's prompts are ~500-1500).")
flags.DEFINE_integer("repeats", 3, "Timed repeats (best is reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights dtype for both engines.")
flags.DEFINE_enum("attn", "sdpa", ["sdpa", "eager"], "transformers attention implementation.")
flags.DEFINE_string("json_out", "", "Also write the figures as JSON here.")
FLAGS = flags.FLAGS


def _torch_model(source: str, dtype):
  from transformers import AutoModelForCausalLM
  path = resolve_source(source)
  kw = dict(dtype=dtype, attn_implementation=FLAGS.attn)
  if path.endswith(".gguf"):
    kw["gguf_file"] = os.path.basename(path)
    path = os.path.dirname(path)
  tm = AutoModelForCausalLM.from_pretrained(path, **kw).eval()
  dtypes = {p.dtype for p in tm.parameters()}
  if dtypes != {dtype}:  # a silently ignored dtype would compare different arithmetic
    raise SystemExit(f"transformers loaded {dtypes}, not {dtype}.")
  return tm


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count())
  bb = lsj.load_backbone(FLAGS.model, dtype=FLAGS.dtype, tokenizer=False)
  tm = _torch_model(FLAGS.model, torch.float32 if FLAGS.dtype == "float32" else torch.bfloat16)
  V, P, N = bb.config.vocab_size, FLAGS.prompt_len, FLAGS.new_tokens
  rng = np.random.RandomState(0)
  rows = []

  prefill = jax.jit(functools.partial(prefill_last, cfg=bb.config))
  for b in (int(x) for x in FLAGS.prefill_batches):
    prompt = rng.randint(0, V, (b, P)).astype(np.int32)
    ours = best_of(lambda: jax.block_until_ready(prefill(bb.params, tokens=prompt)),
                   FLAGS.repeats)
    with torch.inference_mode():
      theirs = best_of(lambda: tm(torch.tensor(prompt), logits_to_keep=1), FLAGS.repeats)
    rows.append(("prefill", b, b * P / ours, b * P / theirs))

  D = FLAGS.decode_prompt_len
  for b in (int(x) for x in FLAGS.decode_batches):
    prompts = rng.randint(0, V, (b, D))

    def ours_gen(n):
      return lambda: lsj.generate_ids(bb, prompts.tolist(), max_new_tokens=n, stop_ids=())

    def torch_gen(n):
      def run():
        with torch.inference_mode():
          tm.generate(torch.tensor(prompts), attention_mask=torch.ones_like(torch.tensor(prompts)),
                      max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
      return run

    ours_t = best_of(ours_gen(N + 1), FLAGS.repeats) - best_of(ours_gen(1), FLAGS.repeats)
    torch_t = best_of(torch_gen(N + 1), FLAGS.repeats) - best_of(torch_gen(1), FLAGS.repeats)
    rows.append(("decode", b, b * N / ours_t, b * N / torch_t))

  import transformers
  peer = (f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
          f"{transformers.__version__}, attention {tm.config._attn_implementation}")
  print(f"machine: {machine()}; {peer}")
  print(f"model: {FLAGS.model} ({FLAGS.dtype}), prompt {P}, decode {N} tokens after a "
        f"{D}-token prompt")
  print(f"{'phase':8s} {'batch':>5s} {'ours tok/s':>11s} {'torch tok/s':>12s} {'ours/torch':>10s}")
  for phase, b, o, t in rows:
    print(f"{phase:8s} {b:5d} {o:11.1f} {t:12.1f} {o / t:10.2f}")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({"machine": machine(), "peer": peer, "rows": [dict(zip(("phase", "batch", "ours", "torch"), r))
                                                for r in rows]}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
