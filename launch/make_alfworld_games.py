"""Generate ALFWorld-format games offline (all six task types), optionally verify them.

  python -m launch.make_alfworld_games --out=workdir/alfworld --seed=0
  python -m launch.make_alfworld_games --out=workdir/alfworld --num_train=600 --verify
  python -m launch.make_alfworld_games --out=workdir/alfworld --num_train=0 \\
      --num_valid_seen=0 --num_valid_unseen=0 --verify   # only check existing games

Writes <out>/json_2.1.1/{train,valid_seen,valid_unseen}/<task folder>/trial_*/ with
game.tw-pddl and traj_data.json, the layout ALFWorld's AlfredTWEnv reads (point
$ALFWORLD_DATA or `data_root` at --out). The same --seed gives byte-identical files.
With --verify, every game is loaded by AlfredTWEnv and its stored expert plan is played
through AlfredTWEnv's batched environment; the script fails unless every game is won.
"""

from __future__ import annotations

import collections
import os
import time

from absl import flags, logging
from tqdm import tqdm

from launch import common
from lskill_jax.envs import alfworld as aw
from lskill_jax.io import write_json

flags.DEFINE_string("out", None, "Root folder for the games (json_2.1.1/<split>/... is created in it).")
flags.DEFINE_integer("seed", 0, "Seed; the same seed gives byte-identical games.")
flags.DEFINE_integer("num_train", 3553, "Games in train (the official train split has 3553).")
flags.DEFINE_integer("num_valid_seen", 140, "Games in valid_seen (official: 140).")
flags.DEFINE_integer("num_valid_unseen", 134, "Games in valid_unseen (official: 134).")
flags.DEFINE_list("task_types", list(aw.TASK_TYPES), "Task types to generate, in turn.")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "Processes that build (and verify) games.")
flags.DEFINE_bool("overwrite", False, "Replace splits that already hold games under --out.")
flags.DEFINE_bool("verify", False, "Play the expert plan of every game through AlfredTWEnv; "
                  "fail unless all are won.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def _table(counts: dict[str, collections.Counter]) -> str:
  """Rows per split, columns per task type (short names)."""
  header = ["split"] + [aw.TASK_SHORT_NAMES[t] for t in aw.TASK_TYPES] + ["total"]
  rows = [header]
  for split, counter in counts.items():
    rows.append([split] + [str(counter.get(t, 0)) for t in aw.TASK_TYPES] + [str(sum(counter.values()))])
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def generate() -> dict[str, collections.Counter]:
  counts = {}
  sizes = {"train": FLAGS.num_train, "valid_seen": FLAGS.num_valid_seen,
           "valid_unseen": FLAGS.num_valid_unseen}
  for split, num in sizes.items():
    if num <= 0:
      continue
    counter = collections.Counter()
    games = aw.generate_split(FLAGS.out, split, num, seed=FLAGS.seed, task_types=FLAGS.task_types,
                              workers=FLAGS.workers, overwrite=FLAGS.overwrite)
    for game in tqdm(games, total=num, desc=f"generate {split}", unit="game"):
      counter[game.task.task_type] += 1
    counts[split] = counter
  return counts


def verify() -> tuple[dict[str, collections.Counter], dict[str, collections.Counter]]:
  """Play every game's stored expert plan through AlfredTWEnv (batched, one slot per worker)."""
  played, won = {}, {}
  for split in aw.SPLITS:
    try:
      env = aw.AlfworldEnv(split, data_root=FLAGS.out, batch_size=max(1, FLAGS.workers),
                           prefer_official=False)
    except FileNotFoundError:
      continue
    with env, tqdm(total=len(env.games), desc=f"verify {split}", unit="game") as bar:
      replays = aw.replay_walkthroughs(env, on_batch=bar.update)
    played[split], won[split] = collections.Counter(), collections.Counter()
    for replay in replays.values():
      played[split][replay.task_type] += 1
      won[split][replay.task_type] += int(replay.won and not replay.won_at_start)
      if not replay.won or replay.won_at_start:
        logging.error("expert plan does not win %s", replay.game_file)
  return played, won


def main(argv):
  del argv
  start = time.time()
  counts = generate()
  print(f"Generated in {time.time() - start:.0f}s under {FLAGS.out}:\n{_table(counts)}")
  summary = {"seed": FLAGS.seed, "generated": {s: dict(c) for s, c in counts.items()}}
  if FLAGS.verify:
    start = time.time()
    played, won = verify()
    print(f"Verified in {time.time() - start:.0f}s. Games played:\n{_table(played)}")
    print(f"Games the expert won:\n{_table(won)}")
    summary["verified"] = {s: {"played": dict(played[s]), "won": dict(won[s])} for s in played}
    lost = sum(sum(played[s].values()) - sum(won[s].values()) for s in played)
    if lost:
      raise SystemExit(f"The expert lost {lost} game(s); see the errors above.")
  write_json(os.path.join(FLAGS.out, "generation_summary.json"), summary, indent=1, sort_keys=True)


if __name__ == "__main__":
  common.run(main)
