"""Measure a saved training step: loss with the document's own adapter vs none vs another's.

  python -m launch.validate --workdir=workdir/stage1 --split=train,val --docs=32 [--step=300]

Reads the run's config.json (written by launch.train) unless --config is given, restores the
step (default: the latest), and prints one row per split and mode with the gaps
`none - own` (what adapters buy) and `other - own` (what the document's own adapter buys),
each the mean of per-document paired differences with a 95% bootstrap interval.

  python -m launch.validate --workdir=workdir/stage1 --documents=workdir/starter/val.jsonl --cut=240

measures the step on documents of your own instead (a jsonl of {"text": ...} lines, e.g. skills
held out of training), each cut at a paragraph to --cut tokens (--cut_at=token: to exactly
its first --cut tokens, so adapters compare on content, not length): every document's adapter
against every other's (`loss_matrix`), "other" being the mean of the other documents' adapters,
and how many documents their own adapter serves best.

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

import json
import os

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from launch import common
from lskill_jax.io import write_json
from lskill_jax.data import records
from lskill_jax.training.validation import (CUTS, DOC_SHARE, MODES, checkpoint_compiler, cut_document,
                                            evaluate_checkpoint, loss_matrix, matrix_gaps)

config_flags.DEFINE_config_file("config", None, "The run's training config (default: "
                                "WORKDIR/config.json).", lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_list("split", ["val"], "Comma-separated splits: val, train.")
flags.DEFINE_integer("docs", None, "Documents (stage 2: records) per split (default: "
                     "config.train.eval_docs).")
flags.DEFINE_string("documents", "", "A jsonl of {\"text\": ...} documents to measure on instead of "
                    "the run's splits (the first --docs of them, default 16).")
flags.DEFINE_integer("cut", 240, "--documents: keep each document's leading paragraphs up to this "
                     "many tokens.")
flags.DEFINE_enum("cut_at", "paragraph", list(CUTS), "--documents: cut at the last "
                  "paragraph that fits --cut tokens (lengths differ), or at token --cut (one length).")
flags.DEFINE_string("out", "", "Also write the results to this JSON file.")
FLAGS = flags.FLAGS


def _run_config(workdir: str):
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise app.UsageError(f"{path} not found: pass --config=<the run's config file> (with the "
                         "same --config.x=y overrides it was trained with).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _documents(config, mesh) -> dict:
  comp = checkpoint_compiler(config, FLAGS.workdir, FLAGS.step, mesh)
  texts, report = records.read_pretrain_jsonl(FLAGS.documents)
  texts = [cut_document(t, comp.backbone.tokenizer, FLAGS.cut, FLAGS.cut_at)
           for t in texts[:FLAGS.docs or 16]]
  if len(texts) < 2 or not all(t.strip() for t in texts):
    raise records.DataError(f"{FLAGS.documents}: need at least two documents whose first "
                            f"paragraph fits --cut={FLAGS.cut} tokens ({report.summary()}); raise --cut.")
  print(f"{'mode':15} {'docs':>5} {'own':>7} {'none':>7} {'other':>7} {'none-own':>9} "
        f"{'other-own [95% CI]':>26} {'own best':>9}")
  results = {}
  for mode in MODES:
    matrix = loss_matrix(comp, texts, mode=mode)
    res = results[mode] = {**matrix_gaps(matrix), "loss_matrix": matrix.tolist()}
    print(f"{mode:15} {res['docs']:5d} {res['own']:7.4f} {res['none']:7.4f} {res['other']:7.4f} "
          f"{res['gap_none']:+9.4f} {res['gap_other']:+.4f} [{res['gap_other_low']:+.4f}, "
          f"{res['gap_other_high']:+.4f}]  {res['positive']:3d} of {res['docs']}")
  return {FLAGS.documents: results}


def main(argv):
  del argv
  config = FLAGS.config or _run_config(FLAGS.workdir)
  mesh = common.init_runtime()
  if FLAGS.documents:
    results = _documents(config, mesh)
    if FLAGS.out:
      write_json(FLAGS.out, {"workdir": FLAGS.workdir, "step": FLAGS.step, "cut": FLAGS.cut,
                             "cut_at": FLAGS.cut_at, **results}, indent=1)
    return
  results = evaluate_checkpoint(config, FLAGS.workdir, FLAGS.step, tuple(FLAGS.split), FLAGS.docs, mesh)
  print(f"{'split':6} {'mode':15} {'docs':>5} {'own':>7} {'none':>7} {'other':>7} "
        f"{'none-own [95% CI]':>26} {'other-own [95% CI]':>26} {'doc share':>9}")
  for split, res in results.items():
    for mode in sorted({k.split("/")[0] for k in res}):
      own, none, other = (res[f"{mode}/{c}"] for c in ("own", "none", "other"))
      gaps = [f"{res[f'{mode}/gap_{g}']:+.4f} [{res[f'{mode}/gap_{g}_low']:+.4f}, "
              f"{res[f'{mode}/gap_{g}_high']:+.4f}]" for g in ("none", "other")]
      print(f"{split:6} {mode:15} {res[f'{mode}/docs']:5d} {own:7.4f} {none:7.4f} {other:7.4f} "
            f"{gaps[0]:>26} {gaps[1]:>26} {res[f'{mode}/{DOC_SHARE}']:9.5f}")
  if FLAGS.out:
    write_json(FLAGS.out, {"workdir": FLAGS.workdir, "step": FLAGS.step, **results}, indent=1)


if __name__ == "__main__":
  common.run(main)
