"""Build skill_pretrain/{train,val}.jsonl from skill files and other offline documentation.

  # the starter skills only
  python -m launch.build_corpus --src=data/starter_corpus --out=workdir/skill_pretrain
  # thousands of skill-like documents from what is installed (see lskill_jax/data/sources.py)
  python -m launch.build_corpus --sources=files,man,info,pymeta,pyreadme,pydoc \\
      --out=workdir/skill_corpus
  # the "random items" diagnostic corpus (documents whose content cannot be guessed)
  python -m launch.build_corpus --items=2000 --items_val=64 --out=workdir/items
"""

from __future__ import annotations

import os
import sysconfig
import time

from absl import app, flags

from launch import common
from lskill_jax.data import sources as src_lib
from lskill_jax.data.corpus import CorpusSelector, skill_files, write_corpus
from lskill_jax.io import write_jsonl

SOURCES = ("files", "man", "info", "pymeta", "pyreadme", "pydoc")

flags.DEFINE_string("out", None, "Output directory (gets train.jsonl and val.jsonl).", required=True)
flags.DEFINE_list("sources", ["files"], f"Where documents come from, in this order: {', '.join(SOURCES)}.")
flags.DEFINE_multi_string("src", ["data/starter_corpus"], "Files or directories of skill documents (source 'files').")
flags.DEFINE_string("man_dir", "/usr/share/man", "Manual pages (source 'man'): reads its man*/ sections.")
flags.DEFINE_integer("man_max_per_family", 1000, "Keep about this many manual pages of one command family "
                     "(gcloud, git, ...; chosen by a hash of the name); 0: all.")
flags.DEFINE_string("info_dir", "/usr/share/info", "Info manuals (source 'info').")
flags.DEFINE_multi_string("py_dir", None, "Installed-package directories for pymeta, pyreadme and pydoc "
                          "(default: this interpreter's site-packages).")
flags.DEFINE_bool("pydoc_stdlib", True, "Source 'pydoc' also reads the standard library.")
flags.DEFINE_integer("min_words", 30, "Drop shorter documents.")
flags.DEFINE_integer("max_words", 3000, "Drop longer documents (long manual pages and modules are "
                     "first cut at their headings into parts of at most this many words).")
flags.DEFINE_float("val_fraction", 0.1, "Share of documents held out for validation.")
flags.DEFINE_float("near_dup", 0.8, "Drop a document whose word 5-grams overlap an earlier one's by "
                   "at least this Jaccard similarity (0: only exact duplicates).")
flags.DEFINE_integer("items", 0, "Instead of sources: write this many training documents of random items.")
flags.DEFINE_integer("items_val", 64, "Validation documents of random items (their item sets are unseen in training).")
flags.DEFINE_integer("items_per_doc", 6, "Distinct items per document (from a 24-word vocabulary).")
flags.DEFINE_integer("seed", 0, "Seed of the random items.")
FLAGS = flags.FLAGS


def _py_dirs() -> list[str]:
  return FLAGS.py_dir or sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def _source(name: str):
  """The candidates of one source; listing its files now, so a missing source fails at once."""
  if name == "files":
    return skill_files(FLAGS.src)
  if name == "man":
    return src_lib.man_pages(FLAGS.man_dir, FLAGS.max_words, FLAGS.man_max_per_family)
  if name == "info":
    return src_lib.info_nodes(FLAGS.info_dir)
  if name == "pymeta":
    return src_lib.package_metadata(_py_dirs(), FLAGS.max_words)
  if name == "pyreadme":
    return src_lib.package_docs(_py_dirs(), FLAGS.max_words)
  if name == "pydoc":
    stdlib = [sysconfig.get_paths()["stdlib"]] if FLAGS.pydoc_stdlib else []
    return src_lib.docstrings(_py_dirs() + stdlib, FLAGS.max_words)
  raise app.UsageError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}.")


def main(argv):
  del argv
  start = time.perf_counter()
  if FLAGS.items:
    train, val = src_lib.items_corpus(FLAGS.items, FLAGS.items_val, FLAGS.items_per_doc, FLAGS.seed)
    write_jsonl(os.path.join(FLAGS.out, "train.jsonl"), ({"text": t} for t in train))
    write_jsonl(os.path.join(FLAGS.out, "val.jsonl"), ({"text": t} for t in val))
    print(f"items: {len(train)} train + {len(val)} validation documents of {FLAGS.items_per_doc} "
          f"items from {len(src_lib.ITEMS)} words (seed {FLAGS.seed})")
  else:
    if not FLAGS.sources:
      raise app.UsageError(f"--sources is empty; choose from {', '.join(SOURCES)}.")
    # Lists every source's files before reading any, so a missing one fails at once.
    chosen = [(name, _source(name)) for name in FLAGS.sources]
    selector = CorpusSelector(min_words=FLAGS.min_words, max_words=FLAGS.max_words,
                              val_fraction=FLAGS.val_fraction, near_dup=FLAGS.near_dup)
    print(write_corpus(chosen, FLAGS.out, selector).summary())
  print(f"wrote {FLAGS.out}/train.jsonl and val.jsonl in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  common.run(main)
