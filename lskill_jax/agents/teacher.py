"""Teacher trajectories turned into agent turns, demonstrations and Stage-2 records.

An expert play (`envs.alfworld.expert_trajectories`) has observations, admissible commands
and actions but no reasoning. `expert_thoughts` writes a short, grounded `<think>` for each
action from the action itself, what the agent holds and the game's targets (read from the
game's traj_data.json). `alfworld_conversation` renders a play as the turns the evaluation
runner would see: each user turn is exactly the vanilla prompt of that step. Search-QA
trajectories come from `envs.searchqa` with their messages. `stage2_record` is the one writer
of a Stage-2 record for both environments: the skill text as context, the conversation, and
the token lengths of the authors' format. `alfworld_teacher_records` and
`searchqa_teacher_records` build the whole Stage-2 set of an environment from its data.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Mapping, Sequence

from lskill_jax.agents import prompts, skills, tasks
from lskill_jax.agents.accounting import count_chat_tokens, count_text_tokens
from lskill_jax.envs import alfworld as aw
from lskill_jax.envs import searchqa as sq

_GO = re.compile(r"^go to (.+)$")
_OPEN = re.compile(r"^open (.+)$")
_CLOSE = re.compile(r"^close (.+)$")
_TAKE = re.compile(r"^take (.+?) from (.+)$")
_PLACE = re.compile(r"^(?:put|move) (.+?) (?:in/on|into|onto|in|on|to) (.+)$")
_APPLY = re.compile(r"^(clean|heat|cool) (.+?) with (.+)$")
_USE = re.compile(r"^use (.+)$")
_EXAMINE = re.compile(r"^examine (.+)$")

# The appliance each transforming task type needs, and what it does to the object.
_TREATMENT = {"pick_clean_then_place_in_recep": ("sinkbasin", "clean"),
              "pick_heat_then_place_in_recep": ("microwave", "heat"),
              "pick_cool_then_place_in_recep": ("fridge", "cool")}


def game_targets(game_file: str) -> dict[str, str]:
  """The object, destination and lamp types of a game (lower case), from its traj_data.json."""
  try:
    params = aw.traj_data(game_file).get("pddl_params", {})
  except (OSError, ValueError):
    return {}
  keys = {"object": "object_target", "destination": "parent_target", "lamp": "toggle_target"}
  return {k: str(params[v]).lower() for k, v in keys.items() if params.get(v)}


def _a(noun: str) -> str:
  """The noun with its indefinite article ('an apple', 'a cup')."""
  return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _kind(name: str) -> str:
  """'cabinet 4' -> 'cabinet'."""
  return name.rsplit(" ", 1)[0] if name.rsplit(" ", 1)[-1].isdigit() else name


def expert_thoughts(task_type: str, actions: Sequence[str], targets: dict[str, str]) -> list[str]:
  """One short reasoning sentence or two per expert action."""
  obj = targets.get("object", "target object")
  dest = targets.get("destination", "destination")
  appliance, verb = _TREATMENT.get(task_type, (None, None))
  two = task_type == "pick_two_obj_and_place"
  holding, treated, placed = None, False, 0
  thoughts = []
  for action in actions:
    a = action.strip()
    if m := _GO.match(a):
      place = m.group(1)
      if holding is None:
        thought = (f"I still need {_a(obj)}{' for the second placement' if placed else ''}. "
                   f"{place} is a place it could be, so I go there and look.")
      elif appliance and not treated and _kind(place) == appliance:
        thought = f"I am holding the {holding}. It must be {verb}ed first, so I go to {place}."
      elif task_type == "look_at_obj_in_light":
        thought = f"I have the {holding}; now I need the {targets.get('lamp', 'lamp')}, so I go to {place}."
      else:
        thought = f"I am holding the {holding}; I take it to {place}, the {dest} where it belongs."
    elif m := _OPEN.match(a):
      thought = f"{m.group(1)} is closed. I open it to see what is inside."
    elif m := _CLOSE.match(a):
      thought = f"Nothing I need is in {m.group(1)}. I close it and move on."
    elif m := _TAKE.match(a):
      holding = m.group(1)
      thought = f"There is {_a(holding)} in {m.group(2)}, the type the task asks for. I take it."
    elif m := _APPLY.match(a):
      treated = True
      thought = f"I am at {m.group(3)} with the {m.group(2)}. I {m.group(1)} it now."
    elif m := _PLACE.match(a):
      placed += 1
      holding = None
      rest = ("That is the first one; now I find the second."
              if two and placed == 1 else "That should complete the task.")
      thought = f"I am at {m.group(2)}, so I place the {m.group(1)} there. {rest}"
    elif m := _USE.match(a):
      thought = (f"I hold the {holding or obj} next to {m.group(1)}. I switch the lamp on to "
                 "look at it in the light.")
    elif m := _EXAMINE.match(a):
      thought = f"I examine {m.group(1)} to see it more closely."
    elif a == "inventory":
      thought = "I check what I am carrying."
    else:
      thought = "I look around to see where I am and what is here."
    thoughts.append(thought)
  return thoughts


def assistant_turn(thought: str, action: str) -> str:
  """The agent's reply as the prompt asks for it: reasoning, then the action."""
  return f"<think>{thought}</think>\n<action>{action}</action>"


def alfworld_conversation(trajectory, history_length: int = 5, obs_chars: int = 300) -> list[dict]:
  """An expert play (`ExpertTrajectory`) as user/assistant turns.

  The user turn of step t is the vanilla prompt the runner sends at step t (same task
  line, history window, observation and admissible list); the assistant turn is a short
  `<think>` and the expert's `<action>`.
  """
  steps = trajectory.steps
  if not steps:
    return []
  task = prompts.task_description(steps[0].observation)
  thoughts = expert_thoughts(trajectory.task_type, [s.action for s in steps],
                             game_targets(trajectory.game_file))
  messages, history = [], []
  for step, thought in zip(steps, thoughts):
    prompt = prompts.alfworld_prompt(task, step.observation, step.admissible_commands, history,
                                     mode="vanilla", history_length=history_length,
                                     obs_chars=obs_chars)
    messages.extend(prompt.messages)
    messages.append({"role": "assistant", "content": assistant_turn(thought, step.action)})
    history.append((step.observation, step.action))
  return messages


def alfworld_demo(trajectory, obs_chars: int = 300) -> str:
  """An expert play as a fewshot demonstration text (prompts.alfworld_demo_text)."""
  steps = trajectory.steps
  task = prompts.task_description(steps[0].observation) if steps else ""
  thoughts = expert_thoughts(trajectory.task_type, [s.action for s in steps],
                             game_targets(trajectory.game_file))
  return prompts.alfworld_demo_text(
      task, [(s.observation, t, s.action) for s, t in zip(steps, thoughts)], obs_chars)


# ----------------------------------------------------------------------------- Stage-2 records


def stage2_record(context: str, conversations: Sequence[dict], tokenizer) -> dict:
  """A Stage-2 training record with its token lengths under `tokenizer`.

  contextlen: tokens of the skill text alone; conversationlen: tokens of the conversation
  rendered with the chat template (thinking disabled).
  """
  return {"context": context, "conversations": list(conversations),
          "contextlen": count_text_tokens(tokenizer, context),
          "conversationlen": count_chat_tokens(tokenizer, conversations)}


def alfworld_stage2_records(plays: Sequence, skill_for_type: Mapping[str, str], tokenizer, *,
                            history_length: int = 5, obs_chars: int = 300) -> list[dict]:
  """Won expert plays -> Stage-2 records (context = the skill of the play's task type)."""
  records = []
  for play in plays:
    if not play.won or not play.steps:
      continue
    if play.task_type not in skill_for_type:
      raise KeyError(f"no skill text for task type {play.task_type!r}; have {sorted(skill_for_type)}.")
    conversation = alfworld_conversation(play, history_length, obs_chars)
    records.append(stage2_record(skill_for_type[play.task_type], conversation, tokenizer))
  return records


def searchqa_stage2_records(trajectories: Sequence[dict], skill_for_type: Mapping[str, str],
                            tokenizer) -> list[dict]:
  """Search-QA teacher trajectories -> Stage-2 records (context = the skill of the question's type)."""
  records = []
  for traj in trajectories:
    if traj["skill_type"] not in skill_for_type:
      raise KeyError(f"no skill text for skill type {traj['skill_type']!r}; have {sorted(skill_for_type)}.")
    records.append(stage2_record(skill_for_type[traj["skill_type"]], sq.trajectory_messages(traj),
                                 tokenizer))
  return records


# ----------------------------------------------------------------------------- whole sets


def alfworld_teacher_records(tokenizer, *, skills_dir: str, data_root: str, split: str = "train",
                             num_games: int = 237, expert: str = "walkthrough", workers: int = 1,
                             history_length: int = 5, obs_chars: int = 300,
                             prefer_official: bool = True) -> tuple[list[dict], dict]:
  """Stage-2 records from expert plays of the first `num_games` games of `split` (balanced
  over task types; -1 = all), and the counts per task type ({"played", "kept"})."""
  docs = skills.load_skills(os.path.join(skills_dir, "alfworld"), "alfworld")
  games = tasks.alfworld_games(split, data_root, num_games=num_games,
                               prefer_official=prefer_official)
  plays = list(aw.expert_trajectories([g.game_file for g in games], expert=expert,
                                      workers=workers))
  records = alfworld_stage2_records(plays, skills.skill_texts_by_type(docs, "alfworld"), tokenizer,
                                    history_length=history_length, obs_chars=obs_chars)
  played = collections.Counter(p.task_type for p in plays)
  won = collections.Counter(p.task_type for p in plays if p.won and p.steps)
  return records, {"played": dict(played), "kept": dict(won)}


def searchqa_teacher_records(tokenizer, *, skills_dir: str, data_dir: str, split: str = "train",
                             num: int = 500) -> tuple[list[dict], dict]:
  """Stage-2 records from teacher trajectories over the questions of `split`, the first `num`
  dealt round-robin over skill types (-1 = all), and the teacher's counts."""
  docs = skills.load_skills(os.path.join(skills_dir, "searchqa"), "searchqa")
  questions = tasks.searchqa_questions(data_dir, split)
  trajectories, stats = sq.build_trajectories(questions, tasks.searchqa_retriever(data_dir))
  trajectories = tasks.round_robin(trajectories, lambda t: t["skill_type"], sq.SKILL_TYPES)
  if num >= 0:
    trajectories = trajectories[:num]
  records = searchqa_stage2_records(trajectories, skills.skill_texts_by_type(docs, "searchqa"),
                                    tokenizer)
  stats["written"] = dict(collections.Counter(t["skill_type"] for t in trajectories))
  return records, stats
