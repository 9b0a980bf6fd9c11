"""Build the offline Search-QA data: corpus, train/test questions, teacher records.

  python -m launch.build_searchqa --out_dir=workdir/searchqa
  python -m launch.build_searchqa --out_dir=workdir/searchqa \\
      --teacher_out=workdir/searchqa/skill_ift/train.json --skill_dir=skills/searchqa

Writes ``corpus.jsonl``, ``train.jsonl``, ``test.jsonl`` and ``summary.json`` to
--out_dir and, with --teacher_out, Stage-2 records built from teacher
trajectories over the training questions (written by the same function as
launch/make_teacher_data.py's, token lengths measured with --model's tokenizer). Prints counts by skill type and the
retriever's recall@k on the direct questions.
"""

from __future__ import annotations

import collections
import json
import os

from absl import app, flags, logging

from launch import common
import lskill_jax as lsj
from lskill_jax.agents import teacher
from lskill_jax.data.documents import read_skill
from lskill_jax.envs import searchqa as sq
from lskill_jax.io import write_json

flags.DEFINE_string("out_dir", None, "Directory for corpus.jsonl, train.jsonl, test.jsonl, summary.json.")
flags.DEFINE_integer("seed", 0, "Seed for question sampling and the train/test split.")
flags.DEFINE_integer("per_type", 600, "Questions per skill type (train + test).")
flags.DEFINE_float("test_fraction", 0.2, "Share of each skill type held out for testing.")
flags.DEFINE_integer("topk", sq.DEFAULT_TOPK, "Passages per search.")
flags.DEFINE_string("retriever_factory", None,
                    "Optional 'package.module:function' building a retriever from the passage list "
                    "(default: BM25).")
flags.DEFINE_string("teacher_out", None, "Where to write Stage-2 records (a skill_ift train.json, what "
                    "--config.data.train of a Stage-2 config reads); none if unset.")
flags.DEFINE_string("model", "smollm2-135m",
                    "Backbone whose tokenizer measures the teacher records' token lengths.")
flags.DEFINE_enum("teacher_split", "train", ["train", "test"], "Questions the teacher records come from.")
flags.DEFINE_string("skill_dir", "skills/searchqa",
                    "Skill texts: <dir>/<skill_type>/SKILL.md (front matter dropped) or "
                    "<dir>/<skill_type>.txt, for every skill type.")
FLAGS = flags.FLAGS

def read_skill_texts(skill_dir: str) -> dict[str, str]:
  """Skill text per skill type, from the project layout or the paper's .txt files."""
  texts = {}
  for skill_type in sq.SKILL_TYPES:
    names = [skill_type] + [k for k, v in sq.SKILL_ALIASES.items() if v == skill_type]
    candidates = [os.path.join(skill_dir, n, "SKILL.md") for n in names]
    candidates += [os.path.join(skill_dir, f"{n}.txt") for n in names]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
      raise FileNotFoundError(
          f"No skill text for {skill_type!r} under {skill_dir!r}; expected one of {candidates}. "
          "Point --skill_dir at the Search-QA skills.")
    texts[skill_type] = read_skill(path).text  # the body, as the agents and the compiler read it
  return texts


def _count(records) -> dict[str, int]:
  return dict(sorted(collections.Counter(r["skill_type"] for r in records).items()))


def main(argv):
  del argv
  # Read the skills first: a wrong --skill_dir should fail before any work.
  skills = read_skill_texts(FLAGS.skill_dir) if FLAGS.teacher_out else None
  tokenizer = lsj.load_backbone(FLAGS.model).tokenizer if FLAGS.teacher_out else None
  if FLAGS.teacher_out and tokenizer is None:
    raise app.UsageError(f"--model={FLAGS.model} has no tokenizer to measure lengths with.")

  facts, passages, splits = sq.write_dataset(FLAGS.out_dir, seed=FLAGS.seed,
                                             per_type=FLAGS.per_type,
                                             test_fraction=FLAGS.test_fraction)

  retriever = sq.load_retriever(passages, factory=FLAGS.retriever_factory)
  direct = [r for recs in splits.values() for r in recs if r["skill_type"] == "direct_retrieval"]
  summary = {
      "entities": len(facts),
      "passages": len(passages),
      "questions": {name: _count(recs) for name, recs in splits.items()},
      f"direct_recall@{FLAGS.topk}": sq.retrieval_recall(direct, retriever, k=FLAGS.topk),
      "seed": FLAGS.seed,
  }

  if FLAGS.teacher_out:
    trajectories, stats = sq.build_trajectories(splits[FLAGS.teacher_split], retriever, topk=FLAGS.topk)
    write_json(FLAGS.teacher_out, teacher.searchqa_stage2_records(trajectories, skills, tokenizer),
               ensure_ascii=False, indent=1)
    summary["teacher"] = stats

  write_json(os.path.join(FLAGS.out_dir, "summary.json"), summary, ensure_ascii=False,
             indent=2)
  logging.info("wrote %s", FLAGS.out_dir)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  flags.mark_flag_as_required("out_dir")
  common.run(main)
