"""Write Stage-2 training data: teacher trajectories for ALFWorld and Search-QA.

  python -m launch.make_teacher_data --out=workdir/skill_ift/train.json \\
      --alfworld_data=workdir/alfworld --searchqa_data=workdir/searchqa

ALFWorld: expert plays of training games (the planner-checked plan stored in each game,
or --expert=planner to plan afresh), rendered as the agent turns the evaluation runner
would see: each user turn is the vanilla prompt of that step, each assistant turn a short
`<think>` and `<action>expert action</action>`. Search-QA: the teacher trajectories of
`lskill_jax.envs.searchqa` (searches that really find their facts, then the answer).

Output: one JSON list of {"context": skill text, "conversations": [{"role", "content"}...],
"contextlen", "conversationlen"} (lengths in tokens of --model's tokenizer), written
atomically; the paper used 237 ALFWorld and 500 Search-QA trajectories.
"""

from __future__ import annotations

import collections
import json
import os

from absl import app, flags

from launch import common
import lskill_jax as lsj
from lskill_jax.agents import skills, tasks, teacher
from lskill_jax.envs import alfworld as aw
from lskill_jax.envs import searchqa as sq
from lskill_jax.io import write_json

flags.DEFINE_string("out", None, "Output JSON file (e.g. workdir/skill_ift/train.json).")
flags.DEFINE_string("model", "smollm2-135m", "Backbone whose tokenizer measures the lengths.")
flags.DEFINE_list("envs", ["alfworld", "searchqa"], "Environments to take trajectories from.")
flags.DEFINE_string("skills_dir", "skills", "Skill documents: <dir>/<env>/<skill>/SKILL.md.")
flags.DEFINE_string("alfworld_data", "workdir/alfworld",
                    "Root of the ALFWorld games (python -m launch.make_alfworld_games --out=DIR).")
flags.DEFINE_bool("prefer_official", True, "Use official games under $ALFWORLD_DATA if present.")
flags.DEFINE_string("alfworld_split", "train", "Split the expert plays come from.")
flags.DEFINE_integer("num_alfworld", 237, "Games to play (balanced over task types); -1 = all.")
flags.DEFINE_enum("expert", "walkthrough", ["walkthrough", "planner", "handcoded"],
                  "ALFWorld expert: the stored planner-checked plan, fast-downward, or the "
                  "heuristic agent.")
flags.DEFINE_integer("workers", 1, "Processes that play the expert.")
flags.DEFINE_integer("history_length", 5, "History pairs in each user turn (as the runner).")
flags.DEFINE_integer("obs_chars", 300, "Past observations are cut to this many characters.")
flags.DEFINE_string("searchqa_data", "workdir/searchqa",
                    "Search-QA data (python -m launch.build_searchqa --out_dir=DIR).")
flags.DEFINE_string("searchqa_split", "train", "Question split the teacher answers.")
flags.DEFINE_integer("num_searchqa", 500, "Trajectories to keep (balanced over skill types); -1 = all.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def alfworld_records(tokenizer) -> tuple[list[dict], dict]:
  """Stage-2 records from expert plays of the training games, and counts per task type."""
  docs = skills.load_skills(os.path.join(FLAGS.skills_dir, "alfworld"), "alfworld")
  games = tasks.alfworld_games(FLAGS.alfworld_split, FLAGS.alfworld_data,
                               num_games=FLAGS.num_alfworld, prefer_official=FLAGS.prefer_official)
  plays = list(aw.expert_trajectories([g.game_file for g in games], expert=FLAGS.expert,
                                      workers=FLAGS.workers))
  records = teacher.alfworld_stage2_records(
      plays, skills.skill_texts_by_type(docs, "alfworld"), tokenizer,
      history_length=FLAGS.history_length, obs_chars=FLAGS.obs_chars)
  played = collections.Counter(p.task_type for p in plays)
  won = collections.Counter(p.task_type for p in plays if p.won and p.steps)
  return records, {"played": dict(played), "kept": dict(won)}


def searchqa_records(tokenizer) -> tuple[list[dict], dict]:
  """Stage-2 records from Search-QA teacher trajectories, and the teacher's counts."""
  docs = skills.load_skills(os.path.join(FLAGS.skills_dir, "searchqa"), "searchqa")
  by_type = skills.skill_texts_by_type(docs, "searchqa")
  questions = tasks.searchqa_questions(FLAGS.searchqa_data, FLAGS.searchqa_split)
  retriever = tasks.searchqa_retriever(FLAGS.searchqa_data)
  trajectories, stats = sq.build_trajectories(questions, retriever)
  trajectories = tasks.round_robin(trajectories, lambda t: t["skill_type"], sq.SKILL_TYPES)
  if FLAGS.num_searchqa >= 0:
    trajectories = trajectories[:FLAGS.num_searchqa]
  records = teacher.searchqa_stage2_records(trajectories, by_type, tokenizer)
  stats["written"] = dict(collections.Counter(t["skill_type"] for t in trajectories))
  return records, stats


def main(argv):
  del argv
  builders = {"alfworld": alfworld_records, "searchqa": searchqa_records}
  unknown = set(FLAGS.envs) - set(builders)
  if unknown:
    raise app.UsageError(f"--envs: unknown {sorted(unknown)}; choose from {sorted(builders)}.")
  tokenizer = lsj.load_backbone(FLAGS.model).tokenizer
  if tokenizer is None:
    raise app.UsageError(f"--model={FLAGS.model} has no tokenizer to measure lengths with.")
  records, summary = [], {}
  for env in FLAGS.envs:
    try:
      recs, stats = builders[env](tokenizer)
    except tasks.DataMissingError as err:  # the message says which command makes the data
      raise SystemExit(str(err)) from None
    records += recs
    summary[env] = {"records": len(recs), **stats}
  write_json(FLAGS.out, records, ensure_ascii=False, indent=1)
  summary["out"] = FLAGS.out
  print(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
  common.run(main)
