"""Build skill_pretrain/{train,val}.jsonl from directories of Markdown / SKILL.md files.

  python -m launch.build_corpus --src=data/starter_corpus --out=workdir/skill_pretrain
"""

from __future__ import annotations

import os

from absl import app, flags

from lskill_jax.data.corpus import build_corpus
from lskill_jax.data.records import write_jsonl

flags.DEFINE_multi_string("src", ["data/starter_corpus"], "Files or directories of skill documents.")
flags.DEFINE_string("out", None, "Output directory (gets train.jsonl and val.jsonl).", required=True)
flags.DEFINE_integer("min_words", 30, "Drop shorter documents.")
flags.DEFINE_integer("max_words", 3000, "Drop longer documents.")
flags.DEFINE_float("val_fraction", 0.1, "Share of documents held out for validation.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  train, val, report = build_corpus(FLAGS.src, min_words=FLAGS.min_words,
                                    max_words=FLAGS.max_words, val_fraction=FLAGS.val_fraction)
  write_jsonl(os.path.join(FLAGS.out, "train.jsonl"), ({"text": t} for t in train))
  write_jsonl(os.path.join(FLAGS.out, "val.jsonl"), ({"text": t} for t in val))
  print(report.summary())
  print(f"wrote {FLAGS.out}/train.jsonl and val.jsonl")


if __name__ == "__main__":
  app.run(main)
