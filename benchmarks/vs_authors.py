"""Ours vs the authors' PyTorch LatentSkill at the shapes of their CPU harness presets.

  python -m benchmarks.vs_authors --config=small --rounds=3 \
      --src=LATENTSKILL_WORK_TREE --their_python=VENV/bin/python

`--src` / `--their_python` default to $LATENTSKILL_SRC / $LATENTSKILL_PYTHON; without both,
only our side runs. Each round runs their harness (`../shared/bench/official_latentskill_bench.py`
unless --harness says otherwise) and then ours (`benchmarks.at_preset`), each in its own
subprocess so peak RSS is per process; the two alternate round by round. Each side's figure
is its best over rounds (each round's figure is that process's median of --iters calls).
Shape flags (--config, --t_doc, --t_conv, --compile_batch, --iters,
--warmup) and --phases (compile and/or train) are benchmarks.at_preset's and go to both sides; --remat (ours, default on) and
--their_grad_ckpt (theirs, default off) are each side's own memory/time choice. Prints one
line per figure with the ratio, >1 meaning ours is better (faster, more documents/s, or less
memory). Absolute seconds on a shared machine are not stable: compare the ratios of one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

from benchmarks import at_preset  # noqa: F401  (its flags are the shared ones: --config, --t_doc, ...)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("rounds", 3, "Alternating rounds (theirs, ours) per side.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "Their torch threads (the harness default).")
flags.DEFINE_bool("their_grad_ckpt", False, "Gradient checkpointing on theirs (the harness "
                  "default is off; their launch scripts turn it on).")
flags.DEFINE_string("src", os.environ.get("LATENTSKILL_SRC", ""), "Work tree of the authors' repo.")
flags.DEFINE_string("their_python", os.environ.get("LATENTSKILL_PYTHON", ""),
                    "Python with torch and transformers for their harness.")
flags.DEFINE_string("harness", os.path.join(REPO, "..", "shared", "bench", "official_latentskill_bench.py"),
                    "Their harness script.")
flags.DEFINE_string("json_out", "", "Also write every round's JSON here.")
FLAGS = flags.FLAGS

# (label, path into the JSON, better: "lower" or "higher")
FIGURES = (
    ("compile, 1 document (s)", ("compile", "latency_b1_s"), "lower"),
    ("plain prefill of the same tokens, floor (s)", ("compile", "prefill_floor_b1_s"), "lower"),
    ("compile, batched (docs/s)", ("compile", "throughput_docs_per_s"), "higher"),
    ("Stage-1 train step, batch 1 (s)", ("train", "step_s"), "lower"),
    ("peak RSS, whole process (MiB)", ("rss_peak_mib", "final"), "lower"),
)


def _last_json(text: str) -> dict:
  for line in reversed(text.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError("no JSON line in the output:\n" + text[-2000:])


def _run(cmd, env) -> dict:
  proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
  return _last_json(proc.stdout)


def ours() -> dict:
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  return _run([sys.executable, "-m", "benchmarks.at_preset", f"--config={FLAGS.config}",
               f"--t_doc={FLAGS.t_doc}", f"--t_conv={FLAGS.t_conv}", f"--iters={FLAGS.iters}",
               f"--warmup={FLAGS.warmup}", f"--compile_batch={FLAGS.compile_batch}",
               f"--remat={FLAGS.remat}", f"--compile_cache={FLAGS.compile_cache}",
               f"--phases={','.join(FLAGS.phases)}"], env)


def theirs() -> dict:
  env = {**os.environ, "LATENTSKILL_SRC": FLAGS.src}
  return _run([FLAGS.their_python, FLAGS.harness, "--config", FLAGS.config, "--t_doc", str(FLAGS.t_doc),
               "--t_conv", str(FLAGS.t_conv), "--iters", str(FLAGS.iters), "--warmup", str(FLAGS.warmup),
               "--compile_batch", str(FLAGS.compile_batch), "--threads", str(FLAGS.threads),
               "--phases", ",".join(FLAGS.phases), "--no_8b"] + (["--grad_ckpt"] if FLAGS.their_grad_ckpt else []), env)


def _get(res: dict, path):
  for k in path:
    res = res.get(k) if isinstance(res, dict) else None
  return res


def best(rounds: list[dict], path, better: str):
  vals = [v for v in (_get(r, path) for r in rounds) if v is not None]
  if not vals:
    return None
  return min(vals) if better == "lower" else max(vals)


def report(mine: list[dict], peer: list[dict]) -> list[str]:
  """One line per figure: theirs, ours, and ours vs theirs (>1 = ours better)."""
  lines = []
  for label, path, better in FIGURES:
    o, t = best(mine, path, better), best(peer, path, better)
    if o is None:
      continue
    if t is None:
      lines.append(f"{label:46s} ours {o:10.4g}")
      continue
    ratio = t / o if better == "lower" else o / t
    lines.append(f"{label:46s} theirs {t:10.4g}  ours {o:10.4g}  ours vs theirs {ratio:5.2f}x")
  for name, rounds in (("ours", mine), ("theirs", peer)):
    b1 = best(rounds, ("compile", "latency_b1_s"), "lower")
    bn = best(rounds, ("compile", "throughput_docs_per_s"), "higher")
    if b1 and bn:
      lines.append(f"batching gain, {name:6s} (docs/s batched / batch 1)    {bn * b1:5.2f}x")
  return lines


def main(argv):
  del argv
  with_peer = bool(FLAGS.src and FLAGS.their_python)
  mine, peer = [], []
  for i in range(FLAGS.rounds):
    if with_peer:
      peer.append(theirs())
      print(f"round {i + 1}: theirs step {_get(peer[-1], ('train', 'step_s'))}", flush=True)
    mine.append(ours())
    print(f"round {i + 1}: ours step {_get(mine[-1], ('train', 'step_s'))}", flush=True)
  print(f"machine: {mine[0].get('machine')}; preset {FLAGS.config}, T_doc {FLAGS.t_doc}, "
        f"T_conv {FLAGS.t_conv}, M {mine[0].get('num_mem_token')}; best of {FLAGS.rounds} rounds"
        + ("" if with_peer else " (ours only: give --src and --their_python for the peer)"))
  if with_peer:
    env = peer[0].get("env", {})
    print(f"theirs: torch {env.get('torch')}, transformers {env.get('transformers')}, "
          f"attn {peer[0].get('attn_impl')}, {peer[0].get('threads')} threads")
  for line in report(mine, peer):
    print(line)
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({"ours": mine, "theirs": peer}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
