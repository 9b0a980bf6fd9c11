"""Matrix-product FLOPs of the authors' PyTorch LatentSkill, counted while their harness runs.

Runs under *their* Python (torch, transformers; no JAX, nothing of this package):

  LATENTSKILL_SRC=WORK_TREE VENV/bin/python benchmarks/their_flops.py \
      --harness=../shared/bench/official_latentskill_bench.py --config=small

Every figure the harness times is run once under `torch.utils.flop_counter.FlopCounterMode`
(matrix products, forward and backward) instead of being timed; the harness's own report is
discarded and the last line printed is one JSON object {figure: FLOPs}. The counter has no
formula for PyTorch's CPU attention kernel; it is given torch's own SDPA formulas, which count
the full score matrix, as ours computes it. Other arguments go to the harness unchanged
(--t_doc, --t_conv, --compile_batch, --attn, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys

# The harness's timed calls in the order it makes them; lambdas carry no useful name.
FIGURES = ("compile_b1", "compile_bN", "encode", "generator", "carve", "prefill", "step")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--harness", required=True, help="Path of official_latentskill_bench.py.")
  args, rest = ap.parse_known_args()
  import torch
  from torch.utils import flop_counter

  aten = torch.ops.aten
  cpu_attention = {  # raw shapes in, FLOPs out
      aten._scaled_dot_product_flash_attention_for_cpu:
          lambda q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v),
      aten._scaled_dot_product_flash_attention_for_cpu_backward:
          lambda g, q, k, v, *a, out_shape=None, **kw:
              flop_counter.sdpa_backward_flop_count(g, q, k, v),
  }

  spec = importlib.util.spec_from_file_location("their_harness", args.harness)
  harness = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(harness)
  counted: list[int] = []

  def count_once(fn, warmup, iters):  # replaces the harness's timer
    del warmup, iters
    # Without gradients torch runs nn.TransformerEncoderLayer as one fused kernel that the
    # counter has no formula for; the unfused path does the same products, visibly.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
      with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    finally:
      torch.backends.mha.set_fastpath_enabled(True)
    counted.append(int(counter.get_total_flops()))
    return 1.0, [1.0]  # any positive time: the report is discarded

  harness.timed = count_once
  sys.argv = [args.harness, "--iters=1", "--warmup=1", "--no_8b", *rest]
  with contextlib.redirect_stdout(io.StringIO()):
    harness.main()
  if len(counted) != len(FIGURES):
    sys.exit(f"the harness made {len(counted)} timed calls, expected {len(FIGURES)} "
             f"({', '.join(FIGURES)}): it has changed; update FIGURES.")
  print(json.dumps({"side": "authors", "torch": torch.__version__,
                    "flops": dict(zip(FIGURES, counted))}))


if __name__ == "__main__":
  main()
