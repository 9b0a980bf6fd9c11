"""What the agents are evaluated on: ALFWorld games, Search-QA questions, demonstrations.

Missing data raises `DataMissingError`, whose message names the command that creates it.
Small samples are balanced: games (questions) are dealt round-robin over task (skill)
types, so the first N cover every type as evenly as N allows.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

from lskill_jax.envs import alfworld as aw
from lskill_jax.envs import searchqa as sq

ALFWORLD_COMMAND = "python -m launch.make_alfworld_games --out={root}"
SEARCHQA_COMMAND = "python -m launch.build_searchqa --out_dir={root}"


class DataMissingError(FileNotFoundError):
  """Evaluation data is not where the configuration points."""


def round_robin(items: Sequence, key, order: Sequence[str]) -> list:
  """Items dealt one per type in `order`, then the second of each, ...; types not in `order` last."""
  groups: dict[str, list] = {}
  for item in items:
    groups.setdefault(key(item), []).append(item)
  types = [t for t in order if t in groups] + sorted(t for t in groups if t not in order)
  out, depth = [], 0
  while len(out) < len(items):
    for t in types:
      if depth < len(groups[t]):
        out.append(groups[t][depth])
    depth += 1
  return out


def _take(items: list, num: int) -> list:
  return items if num is None or num < 0 else items[:num]


# ----------------------------------------------------------------------------- ALFWorld


@dataclasses.dataclass(frozen=True)
class GameRef:
  """A game to play: its id (folder relative to the split), file and task type."""
  id: str
  game_file: str
  task_type: str


def _game_set(split: str, data_root: str | None, task_types: Sequence[str],
              prefer_official: bool, purpose: str):
  try:
    return aw.load_games(split, data_root=data_root, task_types=tuple(task_types),
                         prefer_official=prefer_official)
  except FileNotFoundError as err:
    root = data_root or "DIR"
    raise DataMissingError(
        f"No ALFWorld games for split '{split}' ({purpose}) under data_root={data_root!r}. "
        f"Create them with `{ALFWORLD_COMMAND.format(root=root)}`, or point $ALFWORLD_DATA "
        f"at the official ALFWorld data.\n{err}") from err


def alfworld_games(split: str, data_root: str | None, *, num_games: int = -1,
                   task_types: Sequence[str] | None = None,
                   prefer_official: bool = True) -> list[GameRef]:
  """The first `num_games` games of a split (all when negative), balanced over task types."""
  task_types = tuple(task_types or aw.TASK_TYPES)
  games = _game_set(split, data_root, task_types, prefer_official, "evaluation")
  refs = [GameRef(os.path.relpath(os.path.dirname(f), games.split_dir), f, aw.task_type_of(f))
          for f in sorted(games.game_files)]
  return _take(round_robin(refs, lambda g: g.task_type, aw.TASK_TYPES), num_games)


def alfworld_expert_plays(task_types: Iterable[str], data_root: str | None, *,
                          split: str = "train", expert: str = "walkthrough",
                          prefer_official: bool = True, tries: int = 3) -> dict:
  """One won expert play per task type, from the first games of `split` (fewshot demos)."""
  wanted = tuple(dict.fromkeys(task_types))
  games = _game_set(split, data_root, aw.TASK_TYPES, prefer_official, "fewshot demonstrations")
  by_type: dict[str, list[str]] = {}
  for f in sorted(games.game_files):
    by_type.setdefault(aw.task_type_of(f), []).append(f)
  plays = {}
  for task_type in wanted:
    files = by_type.get(task_type, [])[:tries]
    for play in aw.expert_trajectories(files, expert=expert):
      if play.won and play.steps:
        plays[task_type] = play
        break
    if task_type not in plays:
      raise DataMissingError(
          f"No won expert play of task type {task_type!r} among the first {tries} games of "
          f"'{split}' under {games.split_dir}; generate more games with "
          f"`{ALFWORLD_COMMAND.format(root=data_root or 'DIR')} --num_train=N`.")
  return plays


# ----------------------------------------------------------------------------- Search-QA


def _searchqa_path(data_dir: str, name: str) -> str:
  path = os.path.join(data_dir, name)
  if not os.path.isfile(path):
    raise DataMissingError(
        f"No Search-QA file {name} in {data_dir!r}. Build the data with "
        f"`{SEARCHQA_COMMAND.format(root=data_dir)}`.")
  return path


def searchqa_questions(data_dir: str, split: str = "test", *, num_per_type: int = -1,
                       skill_types: Sequence[str] | None = None) -> list[dict]:
  """Questions of a split, the first `num_per_type` of each skill type, dealt round-robin."""
  records = sq.read_qa_jsonl(_searchqa_path(data_dir, f"{split}.jsonl"))
  skill_types = tuple(skill_types or sq.SKILL_TYPES)
  kept, seen = [], {}
  for rec in records:
    t = rec["skill_type"]
    if t in skill_types and (num_per_type < 0 or seen.get(t, 0) < num_per_type):
      kept.append(rec)
      seen[t] = seen.get(t, 0) + 1
  return round_robin(kept, lambda r: r["skill_type"], skill_types)


def searchqa_retriever(data_dir: str, factory: str | None = None):
  """The retriever over the data's corpus (BM25 unless a factory is named)."""
  return sq.load_retriever(corpus_path=_searchqa_path(data_dir, "corpus.jsonl"),
                           factory=factory or None)


def searchqa_teacher_plays(data_dir: str, retriever, skill_types: Iterable[str], *,
                           split: str = "train", scan: int = 50) -> dict[str, dict]:
  """One teacher trajectory per skill type, from the first questions of `split`."""
  records = sq.read_qa_jsonl(_searchqa_path(data_dir, f"{split}.jsonl"))
  plays = {}
  for skill_type in dict.fromkeys(skill_types):
    candidates = [r for r in records if r["skill_type"] == skill_type][:scan]
    kept, _ = sq.build_trajectories(candidates, retriever)
    if not kept:
      raise DataMissingError(
          f"No teacher trajectory for skill type {skill_type!r} among the first {scan} "
          f"'{split}' questions in {data_dir!r}; rebuild the data with "
          f"`{SEARCHQA_COMMAND.format(root=data_dir)}`.")
    plays[skill_type] = kept[0]
  return plays
