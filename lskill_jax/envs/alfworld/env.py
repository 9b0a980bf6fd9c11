"""Play ALFWorld splits through ALFWorld's own `AlfredTWEnv`, and replay expert plans.

Games come from one of two places, both in the official layout
(`<root>/json_2.1.1/<split>/<task folder>/trial_*/{game.tw-pddl,traj_data.json}`):

* the official ALFWorld data, used whenever `$ALFWORLD_DATA` holds it (valid_seen has 140
  games, valid_unseen 134);
* games made by `gamegen` (`python launch/make_alfworld_games.py --out=DIR`), passed as
  `data_root=DIR` (or found in `$ALFWORLD_DATA` when it points at such a folder).

`AlfworldEnv` is a thin batched wrapper: observations, admissible commands, `won`, and
the task type of the game in each slot. `expert_trajectories` replays an expert on each
game and returns (observation, admissible commands, expert action) steps, the raw
material for teacher trajectories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import multiprocessing
import os
import random
from typing import Callable, Iterator, Mapping, Sequence

from lskill_jax.envs.alfworld.engine import game_engine
from lskill_jax.envs.alfworld.gamegen import DATA_DIRNAME, SPLITS, TASK_TYPES

ALFWORLD_DATA_VAR = "ALFWORLD_DATA"
# AlfredTWEnv names splits by role rather than by folder.
_TRAIN_EVAL = {"train": "train", "valid_seen": "eval_in_distribution",
               "valid_unseen": "eval_out_of_distribution"}
_CONFIG_PATH_KEY = {"train": "data_path", "valid_seen": "eval_id_data_path",
                    "valid_unseen": "eval_ood_data_path"}
EXPERTS = ("walkthrough", "planner", "handcoded")


# ---------------------------------------------------------------------------------------
# Finding games.
# ---------------------------------------------------------------------------------------

def _has_games(split_dir: str) -> bool:
  if not os.path.isdir(split_dir):
    return False
  for _, _, files in os.walk(split_dir):
    if "traj_data.json" in files:
      return True
  return False


def _first_traj(split_dir: str) -> dict:
  for folder, dirs, files in os.walk(split_dir):
    dirs.sort()
    if "traj_data.json" in files:
      with open(os.path.join(folder, "traj_data.json")) as f:
        return json.load(f)
  return {}


def data_source(split_dir: str) -> str:
  """'generated' for folders written by gamegen, 'official' for anything else."""
  return "generated" if "generator" in _first_traj(split_dir) else "official"


def resolve_split_dir(split: str, data_root: str | None = None,
                      prefer_official: bool = True) -> str:
  """The folder a split's games are read from.

  Order: official data under `$ALFWORLD_DATA` (unless `prefer_official` is False), then
  `data_root`, then whatever `$ALFWORLD_DATA` holds. Raises FileNotFoundError, saying
  where it looked and how to make games, when none of them holds the split.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
  env_root = os.environ.get(ALFWORLD_DATA_VAR)
  env_dir = os.path.join(os.path.expanduser(env_root), DATA_DIRNAME, split) if env_root else None
  root_dir = os.path.join(os.path.expanduser(data_root), DATA_DIRNAME, split) if data_root else None

  if prefer_official and env_dir and _has_games(env_dir) and data_source(env_dir) == "official":
    return env_dir
  if root_dir and _has_games(root_dir):
    return root_dir
  if env_dir and _has_games(env_dir):
    return env_dir
  looked = [d for d in (root_dir, env_dir) if d] or ["(no data_root given, $ALFWORLD_DATA unset)"]
  raise FileNotFoundError(
      f"No ALFWorld games for split '{split}'. Looked in: {', '.join(looked)}.\n"
      "Generate games with `python launch/make_alfworld_games.py --out=DIR` and pass "
      "data_root=DIR (or set ALFWORLD_DATA=DIR), or place the official ALFWorld data "
      f"(its {DATA_DIRNAME}/ folder) under $ALFWORLD_DATA.")


@dataclasses.dataclass(frozen=True)
class GameSet:
  """The games of one split, as AlfredTWEnv collected them (solvable ones only)."""
  split: str
  split_dir: str
  source: str  # 'official' or 'generated'
  game_files: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.game_files)


def traj_data(game_file: str) -> dict:
  """The traj_data.json beside a game file: task type, PDDL parameters, scene, plan."""
  with open(os.path.join(os.path.dirname(game_file), "traj_data.json")) as f:
    return json.load(f)


def task_type_of(game_file: str) -> str:
  """Task type of a game, read from the traj_data.json beside its game file."""
  return traj_data(game_file)["task_type"]


def alfred_config(split: str, split_dir: str, task_types: Sequence[str] = TASK_TYPES,
                  max_steps: int = 50, num_games: int = -1) -> dict:
  """The configuration dict AlfredTWEnv expects (the fields of alfworld's base_config)."""
  unknown = set(task_types) - set(TASK_TYPES)
  if unknown:
    raise ValueError(f"Unknown task types {sorted(unknown)}; expected some of {TASK_TYPES}.")
  ids = [i + 1 for i, t in enumerate(TASK_TYPES) if t in set(task_types)]
  dataset = {"data_path": "", "eval_id_data_path": "", "eval_ood_data_path": "",
             "num_train_games": num_games, "num_eval_games": num_games}
  dataset[_CONFIG_PATH_KEY[split]] = split_dir
  return {
      "dataset": dataset,
      "logic": {"domain": "", "grammar": ""},  # games carry their own domain and grammar
      "env": {"type": "AlfredTWEnv", "task_types": ids, "goal_desc_human_anns_prob": 0.0,
              "domain_randomization": False, "expert_type": "handcoded"},
      # 'dqn' keeps AlfredTWEnv from stepping its handcoded expert alongside the agent.
      "general": {"training_method": "dqn"},
      "rl": {"training": {"max_nb_steps_per_episode": max_steps}},
      "dagger": {"training": {"max_nb_steps_per_episode": max_steps}},
  }


@contextlib.contextmanager
def _quiet():
  # AlfredTWEnv prints progress bars and counts; keep library output out of ours.
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    yield


def _make_alfred_env(split: str, split_dir: str, task_types: Sequence[str], max_steps: int):
  from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

  config = alfred_config(split, split_dir, task_types, max_steps)
  with _quiet():
    env = AlfredTWEnv(config, train_eval=_TRAIN_EVAL[split])
  # os.walk order depends on the file system; a sorted list makes runs repeatable.
  env.game_files = sorted(env.game_files)
  env.num_games = len(env.game_files)
  return env


def _alfred_games(split: str, data_root: str | None, task_types: Sequence[str],
                  prefer_official: bool, max_steps: int):
  """(AlfredTWEnv over the split's folder, the games it collected); refuses an empty set."""
  split_dir = resolve_split_dir(split, data_root, prefer_official)
  env = _make_alfred_env(split, split_dir, task_types, max_steps)
  if not env.game_files:
    raise FileNotFoundError(
        f"{split_dir} holds no solvable games of the selected task types {list(task_types)}.")
  return env, GameSet(split, split_dir, data_source(split_dir), tuple(env.game_files))


def load_games(split: str, data_root: str | None = None, task_types: Sequence[str] = TASK_TYPES,
               prefer_official: bool = True) -> GameSet:
  """Collect a split's playable games with AlfredTWEnv's own loader."""
  return _alfred_games(split, data_root, task_types, prefer_official, max_steps=50)[1]


# ---------------------------------------------------------------------------------------
# Playing.
# ---------------------------------------------------------------------------------------

class AlfworldEnv:
  """Batched ALFWorld games of one split, played by AlfredTWEnv's gym environment.

  `reset()` starts the next `batch_size` games; `step(commands)` plays one command per
  slot. `infos` carries, per slot: 'admissible_commands', 'won', 'extra.gamefile',
  'task_type' and 'first_visit' (False when the slot repeats a game already dealt in this
  pass, which happens in the last batch when batch_size does not divide the game count).
  `num_batches` resets deal every game once.
  """

  def __init__(self, split: str, data_root: str | None = None, batch_size: int = 1,
               max_steps: int = 50, task_types: Sequence[str] = TASK_TYPES,
               prefer_official: bool = True, seed: int = 0):
    self.split = split
    self._alfred, self.games = _alfred_games(split, data_root, task_types, prefer_official,
                                             max_steps)
    self.batch_size = batch_size
    self.max_steps = max_steps
    # With batch_size > 1 AlfredTWEnv runs each slot in its own worker process.
    with _quiet():
      self._env = self._alfred.init_env(batch_size=batch_size)
    self._env.seed(seed)
    self._seen: set[str] = set()
    self._task_types = {f: task_type_of(f) for f in self.games.game_files}

  @property
  def num_batches(self) -> int:
    return math.ceil(len(self.games) / self.batch_size)

  def _annotate(self, infos: dict) -> dict:
    files = infos["extra.gamefile"]
    infos["task_type"] = [self._task_types.get(f, "") for f in files]
    first = []
    for f in files:
      first.append(f not in self._seen)
      self._seen.add(f)
    infos["first_visit"] = first
    return infos

  def reset(self) -> tuple[list[str], dict]:
    obs, infos = self._env.reset()
    return list(obs), self._annotate(dict(infos))

  def step(self, commands: Sequence[str]):
    obs, scores, dones, infos = self._env.step(list(commands))
    infos = dict(infos)
    infos["task_type"] = [self._task_types.get(f, "") for f in infos["extra.gamefile"]]
    return list(obs), list(scores), list(dones), infos

  def close(self) -> None:
    self._env.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def stored_walkthrough(game_file: str) -> list[str]:
  """The expert plan a game file stores ('walkthrough'), or [] if it has none."""
  with open(game_file) as f:
    return list(json.load(f).get("walkthrough") or [])


@dataclasses.dataclass(frozen=True)
class Replay:
  """How a game went when its stored walkthrough was played through AlfredTWEnv."""
  game_file: str
  task_type: str
  first_observation: str
  won_at_start: bool
  won: bool


def replay_walkthroughs(env: AlfworldEnv,
                        on_batch: Callable[[int], None] | None = None) -> dict[str, Replay]:
  """Play every game's stored walkthrough through the batched AlfredTWEnv; game -> Replay.

  Deals each game once (`env.num_batches` resets); finished slots are sent 'look', which
  the batch environment ignores once a game is over. `on_batch(n)` is called after each
  batch with the number of games it added (for progress bars).
  """
  results: dict[str, Replay] = {}
  for _ in range(env.num_batches):
    obs, infos = env.reset()
    files, types, at_start = infos["extra.gamefile"], infos["task_type"], list(infos["won"])
    plans = [stored_walkthrough(f) for f in files]
    won = list(at_start)
    for t in range(max(len(p) for p in plans)):
      commands = [p[t] if t < len(p) else "look" for p in plans]
      _, _, dones, infos = env.step(commands)
      won = list(infos["won"])
      if all(dones):
        break
    before = len(results)
    for i, (f, first) in enumerate(zip(files, _first_flags(files, results))):
      if first:
        results[f] = Replay(f, types[i], obs[i], bool(at_start[i]), bool(won[i]))
    if on_batch is not None:
      on_batch(len(results) - before)
  return results


def _first_flags(files: Sequence[str], seen: Mapping[str, Replay]) -> list[bool]:
  flags, batch = [], set()
  for f in files:
    flags.append(f not in seen and f not in batch)
    batch.add(f)
  return flags


# ---------------------------------------------------------------------------------------
# Expert trajectories.
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExpertStep:
  """What the agent saw before acting, what it could do, and what the expert did."""
  observation: str
  admissible_commands: tuple[str, ...]
  action: str


@dataclasses.dataclass(frozen=True)
class ExpertTrajectory:
  """An expert's play of one game."""
  game_file: str
  task_type: str
  steps: tuple[ExpertStep, ...]
  won: bool
  final_observation: str


def _game_stack(expert: str):
  """The engine AlfredTWEnv plays games with, plus what the expert needs from it."""
  extras = ["gamefile"] + (["walkthrough"] if expert in ("walkthrough", "planner") else [])
  return game_engine(extras, handcoded_expert=expert == "handcoded")


def _load(env, game_file: str, expert: str) -> None:
  if expert != "planner":
    env.load(game_file)
    return
  # PddlEnv replays a walkthrough stored in the game file instead of planning; drop it.
  with open(game_file) as f:
    data = json.load(f)
  data["walkthrough"] = None
  env.load(data)


def expert_trajectories(game_files: GameSet | Sequence[str], expert: str = "walkthrough",
                        max_steps: int = 50, seed: int = 0, workers: int = 1,
                        ) -> Iterator[ExpertTrajectory]:
  """Play an expert on each game; yield (in order) its steps and whether it won.

  Experts:
    * 'walkthrough': the plan stored in the game file. For generated games it is a
      cheapest plan under the domain's action costs, checked in the engine when the game
      was made; official games store the plan `alfworld-generate` recorded. Games without
      one fall back to 'planner'.
    * 'planner': fast-downward (shipped with TextWorld) plans from the initial state.
      Exact, but its search can take minutes on kitchen-sized games.
    * 'handcoded': ALFWorld's heuristic expert (`HandCodedTWAgent`), which explores the
      room as a partially-observing agent would; it is not guaranteed to win. Its random
      choices are seeded per game from `seed`, so runs repeat.
  Every expert plays through the same wrappers as AlfredTWEnv (display names such as
  'apple 1', admissible commands, `won`). `workers` > 1 plays games in that many
  processes.
  """
  if expert not in EXPERTS:
    raise ValueError(f"Unknown expert {expert!r}; expected one of {EXPERTS}.")
  files = game_files.game_files if isinstance(game_files, GameSet) else tuple(game_files)
  jobs = [(f, expert, max_steps, seed) for f in files]
  if workers > 1 and len(jobs) > 1:
    # spawn, not fork: forking a process that has JAX's threads running can deadlock.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
      yield from pool.imap(_expert_job, jobs)
  else:
    yield from map(_expert_job, jobs)


_STACKS: dict = {}  # one engine stack per expert kind and process


def _expert_job(job: tuple[str, str, int, int]) -> ExpertTrajectory:
  game_file, expert, max_steps, seed = job
  if expert == "walkthrough":
    with open(game_file) as f:
      if not json.load(f).get("walkthrough"):
        expert = "planner"
  if expert not in _STACKS:
    _STACKS[expert] = _game_stack(expert)
  return _play_expert(_STACKS[expert], game_file, expert, max_steps, seed)


def _play_expert(env, game_file: str, expert: str, max_steps: int, seed: int) -> ExpertTrajectory:
  state_before = random.getstate()
  # The handcoded expert draws from the global `random`; seed it per game, then restore.
  random.seed(f"{seed}:{os.path.basename(os.path.dirname(game_file))}")
  try:
    _load(env, game_file, expert)
    state = env.reset()
    plan = list(state.get("extra.walkthrough") or []) if expert != "handcoded" else None
    steps, done = [], bool(state["won"])
    while not done and len(steps) < max_steps:
      if plan is not None:
        if len(steps) >= len(plan):
          break
        action = plan[len(steps)]
      else:
        action = state["extra.expert_plan"][0]
      steps.append(ExpertStep(state["feedback"], tuple(state["admissible_commands"]), action))
      try:
        state, _, done = env.step(action)
      except Exception as err:  # the handcoded expert gives up by raising
        if expert != "handcoded":
          raise
        return ExpertTrajectory(game_file, task_type_of(game_file), tuple(steps),
                                False, f"(expert gave up: {type(err).__name__})")
    return ExpertTrajectory(game_file, task_type_of(game_file), tuple(steps),
                            bool(state["won"]), state["feedback"])
  finally:
    random.setstate(state_before)
