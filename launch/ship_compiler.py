"""Package a trained compiler as the single-file compiler that ships with the package.

  python -m launch.validate --workdir=workdir/stage1_cpu --step=200 --docs=64 --out=workdir/stage1_cpu/val200.json
  python -m launch.validate --workdir=workdir/stage1_cpu --step=200 --documents=workdir/starter/val.jsonl \\
      --docs=13 --out=workdir/stage1_cpu/starter200.json
  python -m launch.ship_compiler --workdir=workdir/stage1_cpu --step=200 \\
      --results=workdir/stage1_cpu/val200.json --documents_results=workdir/stage1_cpu/starter200.json \\
      --out=lskill_jax/compiler/shipped/smollm2-135m

Writes compiler.json, params.safetensors (bfloat16) and card.md: the training command, the
held-out figures from --results (launch.validate's JSON for the same step) and from any
--documents_results (launch.validate --documents), and how far the bfloat16 copy's adapters
are from the float32 checkpoint's on a few held-out documents.

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

import json
import os

from absl import flags
import jax
import ml_collections
import numpy as np

from launch import common
import lskill_jax as lsj
from lskill_jax.compiler import shipped
from lskill_jax.training.datasets import fitting, load_stage1_texts
from lskill_jax.training.validation import DOC_SHARE

flags.DEFINE_string("workdir", None, "Training workdir (launch.train's).", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("results", None, "launch.validate --out JSON for the same step.", required=True)
flags.DEFINE_list("documents_results", [], "launch.validate --documents --out JSONs for the same "
                  "step (documents of one's own, e.g. held-out skills), tabled on the card too.")
flags.DEFINE_string("out", None, "Output directory (lskill_jax/compiler/shipped/<model>).", required=True)
flags.DEFINE_string("command", "", "The command that trained the run, for the card.")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Storage precision.")
FLAGS = flags.FLAGS


def results_table(results: dict) -> str:
  """Markdown rows of launch.validate's results: one per split and mode."""
  rows = ["| split | mode | docs | own | none | other | none − own [95% CI] | other − own [95% CI] | doc share |",
          "|---|---|---|---|---|---|---|---|---|"]
  for split, res in results.items():
    if not isinstance(res, dict):
      continue
    for mode in sorted({k.split("/")[0] for k in res}):
      g = {n: f"{res[f'{mode}/gap_{n}']:+.3f} [{res[f'{mode}/gap_{n}_low']:+.3f}, "
              f"{res[f'{mode}/gap_{n}_high']:+.3f}]" for n in ("none", "other")}
      rows.append(f"| {split} | {mode} | {res[f'{mode}/docs']} | {res[f'{mode}/own']:.3f} | "
                  f"{res[f'{mode}/none']:.3f} | {res[f'{mode}/other']:.3f} | {g['none']} | "
                  f"{g['other']} | {res[f'{mode}/{DOC_SHARE}']:.3f} |")
  return "\n".join(rows)


def documents_table(*results: dict) -> str:
  """Markdown table of launch.validate --documents results: a row per file, cut and mode."""
  rows = ["| documents | cut | mode | docs | own | none | other | none − own | other − own [95% CI] | own best |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for each in results:
    cut = f"{each.get('cut', '')}" + (" tokens" if each.get("cut_at") == "token" else "")
    for source, res in each.items():
      if not isinstance(res, dict):
        continue
      rel = os.path.relpath(source)  # as the card's commands name it, when under the checkout
      name = os.path.basename(source) if rel.startswith("..") else rel
      for mode, r in sorted(res.items()):
        rows.append(f"| {name} | {cut} | {mode} | {r['docs']} | "
                    f"{r['own']:.3f} | {r['none']:.3f} | {r['other']:.3f} | {r['gap_none']:+.3f} | "
                    f"{r['gap_other']:+.4f} [{r['gap_other_low']:+.4f}, {r['gap_other_high']:+.4f}] | "
                    f"{r['positive']} of {r['docs']} |")
  return "\n".join(rows)


def _read_results(path: str) -> dict:
  with open(path) as f:
    results = json.load(f)
  if FLAGS.step is not None and results.get("step") not in (None, FLAGS.step):
    common.fail(f"{path} measured step {results.get('step')}, not --step={FLAGS.step}.")
  return results


def storage_error(full: lsj.SkillCompiler, stored: lsj.SkillCompiler, docs: list[str]) -> float:
  """Largest relative Frobenius error of the stored copy's ΔW factors over `docs` and targets."""
  worst = 0.0
  for x, y in zip(full.compile(docs), stored.compile(docs)):
    for t in x.targets:
      for f in ("a", "b"):
        u, v = np.asarray(getattr(x, f)[t]), np.asarray(getattr(y, f)[t])
        worst = max(worst, float(np.linalg.norm(u - v) / max(np.linalg.norm(u), 1e-30)))
  return worst


def main(argv):
  del argv
  with open(os.path.join(FLAGS.workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  results = _read_results(FLAGS.results)
  documents = [_read_results(path) for path in FLAGS.documents_results]
  ckpt = FLAGS.workdir if FLAGS.step is None else os.path.join(FLAGS.workdir, "checkpoints", str(FLAGS.step))
  mesh = common.init_runtime()
  bb = lsj.backbone_from_config(config, mesh=mesh, seed=config.get("backbone_seed", 0))
  full = lsj.SkillCompiler.load(ckpt, bb)
  docs = fitting(bb.tokenizer, load_stage1_texts(config.data)[1], config.data.seq_len, "val")[:4]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), full.params)
  rounded = shipped.unflatten(shipped.stored(shipped.flatten(full.params), FLAGS.dtype), abstract,
                              "the stored copy")
  err = storage_error(full, lsj.SkillCompiler(bb, full.spec, jax.device_put(rounded)), docs)
  n_params = sum(int(x.size) for x in jax.tree.leaves(full.params))
  card = "\n".join([
      f"# Shipped compiler for {config.model}",
      "",
      f"Trained by `launch.train` with `{config.name}` (the run's config.json is in its workdir), "
      f"step {FLAGS.step if FLAGS.step is not None else 'latest'}, {n_params:,} parameters stored "
      f"in {FLAGS.dtype}.",
      "",
      "```",
      FLAGS.command or "(training command not recorded)",
      "```",
      "",
      "Held-out documents (never trained on), mean loss per target token in nats; gaps are the mean "
      "of per-document paired differences with a 95% bootstrap interval (`launch.validate`):",
      "",
      results_table(results),
      "",
      *(["Documents of one's own (`launch.validate --documents`), each cut at paragraphs to fit "
         "`cut` tokens (\"N tokens\": to exactly their first N tokens, so that adapters compare on "
         "content, not length); \"other\" is the mean over the other documents' adapters, \"own "
         "best\" counts the documents whose own adapter beats that mean:", "",
         documents_table(*documents), ""] if documents else []),
      f"Storage: the {FLAGS.dtype} copy's adapter factors differ from the float32 checkpoint's by at "
      f"most {err:.2e} (relative Frobenius norm, {len(docs)} held-out documents, every target).",
      ""])
  shipped.export(full, FLAGS.out, dtype=FLAGS.dtype, card=card)
  size = os.path.getsize(os.path.join(FLAGS.out, shipped.PARAMS_FILE))
  print(card)
  print(f"wrote {FLAGS.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
  common.run(main)
