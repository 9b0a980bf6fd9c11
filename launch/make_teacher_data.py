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

import json

from absl import app, flags

from launch import common
import lskill_jax as lsj
from lskill_jax.agents import tasks, teacher
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
  return teacher.alfworld_teacher_records(
      tokenizer, skills_dir=FLAGS.skills_dir, data_root=FLAGS.alfworld_data,
      split=FLAGS.alfworld_split, num_games=FLAGS.num_alfworld, expert=FLAGS.expert,
      workers=FLAGS.workers, history_length=FLAGS.history_length, obs_chars=FLAGS.obs_chars,
      prefer_official=FLAGS.prefer_official)


def searchqa_records(tokenizer) -> tuple[list[dict], dict]:
  """Stage-2 records from Search-QA teacher trajectories, and the teacher's counts."""
  return teacher.searchqa_teacher_records(
      tokenizer, skills_dir=FLAGS.skills_dir, data_dir=FLAGS.searchqa_data,
      split=FLAGS.searchqa_split, num=FLAGS.num_searchqa)


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
