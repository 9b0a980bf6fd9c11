"""Prompt builders for the ALFWorld and Search-QA agents, and ALFWorld action parsing.

Every builder returns a `Prompt`: the chat messages to send plus the exact text of any block
that is not part of the vanilla prompt (the skill under "Retrieved Relevant Experience", or
a demonstration). Blocks are inserted at a point where the vanilla prompt already has a
paragraph break and they end with one, so the block's tokens are the only difference
between a vanilla and an augmented prompt (token accounting relies on that).

Modes: `vanilla` and `latent` send the same prompt (the latent agent carries its skill in
an adapter); `incontext` adds the skill block; `fewshot` adds one demonstration.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

from lskill_jax.envs.searchqa import AGENT_INSTRUCTIONS, question_prompt

MODES = ("vanilla", "fewshot", "incontext", "latent")
SKILL_HEADING = "## Retrieved Relevant Experience"
DEMO_HEADING = "## Example"


@dataclasses.dataclass(frozen=True)
class Prompt:
  """Chat messages for one step and the named blocks inside them ('skill', 'demo')."""
  messages: tuple[dict, ...]
  blocks: Mapping[str, str] = dataclasses.field(default_factory=dict)


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
  return mode


def skill_block(skill_text: str) -> str:
  """The skill as the in-context baseline shows it: heading, blank line, text, blank line."""
  return f"{SKILL_HEADING}\n\n{skill_text.strip()}\n\n"


def demo_block(demo_text: str, what: str) -> str:
  """A worked example under its own heading (`what`: 'task' or 'question')."""
  return (f"{DEMO_HEADING}\n\nHere is an example of how a similar {what} was solved step by step:"
          f"\n\n{demo_text.strip()}\n\n")


def _blocks(mode: str, skill_text: str | None, demo_text: str | None, what: str) -> dict[str, str]:
  check_mode(mode)
  if mode == "incontext":
    if not skill_text:
      raise ValueError("the incontext mode needs the skill text.")
    return {"skill": skill_block(skill_text)}
  if mode == "fewshot":
    if not demo_text:
      raise ValueError("the fewshot mode needs a demonstration.")
    return {"demo": demo_block(demo_text, what)}
  return {}


# ----------------------------------------------------------------------------- ALFWorld

_TASK_LINE = re.compile(r"Your task is to:\s*(.+?)\s*(?:\n|$)")
_BANNER = re.compile(r"\A\s*-= Welcome to TextWorld, ALFRED! =-\s*")

ALFWORLD_INTRO = ("You are an expert agent operating in the ALFRED Embodied Environment. "
                  "Your task is to: {task}\n\n")
ALFWORLD_FIRST_STEP = ("## Current Progress\n"
                       "Your current observation is: {observation}\n"
                       "Your admissible actions of the current situation are: [{admissible}].\n\n")
ALFWORLD_LATER_STEP = (
    "## Current Progress\n"
    "Prior to this step, you have already taken {taken} step(s). Below are the most recent "
    "{shown} observations and the corresponding actions you took: {history}\n"
    "You are now at step {step} and your current observation is: {observation}\n"
    "Your admissible actions of the current situation are: [{admissible}].\n\n")
ALFWORLD_INSTRUCTION = (
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process "
    "MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for current "
    "step and present it within <action> </action> tags.")


def task_description(first_observation: str) -> str:
  """The goal sentence of an ALFWorld game ("put a clean plate in diningtable.")."""
  match = _TASK_LINE.search(first_observation or "")
  return match.group(1).strip() if match else ""


def scene_description(first_observation: str) -> str:
  """The first observation without the welcome banner and the task line."""
  text = _BANNER.sub("", first_observation or "")
  return _TASK_LINE.sub("", text).strip()


def format_history(history: Sequence[tuple[str, str]], obs_chars: int) -> str:
  """Recent (observation, action) pairs, observations cut to `obs_chars` characters."""
  return "\n".join(f"[Observation {i}: '{obs[:obs_chars]}', Action {i}: '{action}']"
                   for i, (obs, action) in enumerate(history, 1))


def alfworld_prompt(task: str, observation: str, admissible: Sequence[str],
                    history: Sequence[tuple[str, str]], *, mode: str = "vanilla",
                    skill_text: str | None = None, demo_text: str | None = None,
                    history_length: int = 5, obs_chars: int = 300) -> Prompt:
  """The one-message prompt of an ALFWorld step.

  `history` holds every (observation, action) pair so far; the last `history_length` are
  shown. The current observation is shown whole, past ones cut to `obs_chars`.
  """
  blocks = _blocks(mode, skill_text, demo_text, "task")
  recent = list(history)[-history_length:] if history_length > 0 else []
  admissible_text = ", ".join(admissible)
  if not history:
    progress = ALFWORLD_FIRST_STEP.format(observation=observation, admissible=admissible_text)
  else:
    progress = ALFWORLD_LATER_STEP.format(
        taken=len(history), shown=len(recent), history=format_history(recent, obs_chars),
        step=len(history) + 1, observation=observation, admissible=admissible_text)
  text = (ALFWORLD_INTRO.format(task=task) + "".join(blocks.values()) + progress
          + ALFWORLD_INSTRUCTION)
  return Prompt(({"role": "user", "content": text},), blocks)


# ALFWorld actions ------------------------------------------------------------------------

_ACTION_PAIR = re.compile(r"<\s*action\s*>(.*?)<\s*/\s*action\s*>", re.IGNORECASE | re.DOTALL)
_ACTION_OPEN = re.compile(r"<\s*action\s*>", re.IGNORECASE)


def normalize_action(text: str) -> str:
  """Lower case, runs of white space collapsed: the form actions are compared in."""
  return " ".join((text or "").split()).lower()


def parse_action(output: str) -> str | None:
  """The content of the last `<action>` tag, or None when the output has none.

  An opening tag after the last complete pair whose closing tag never came (generation ran
  out of tokens) counts too, up to the end of its line.
  """
  output = output or ""
  last = None
  for last in _ACTION_PAIR.finditer(output):
    pass
  tail_from = last.end() if last else 0
  opened = None
  for opened in _ACTION_OPEN.finditer(output, tail_from):
    pass
  if opened is not None:
    rest = output[opened.end():].strip().split("\n", 1)[0].strip()
    if rest:
      return rest
  if last is not None and last.group(1).strip():
    return last.group(1).strip()
  return None


@dataclasses.dataclass(frozen=True)
class ActionChoice:
  """What the agent will do: the command sent, what it wrote, and why a fallback was used."""
  command: str
  parsed: str | None
  fallback: str | None  # None, 'no_action' or 'not_admissible'


def choose_action(output: str, admissible: Sequence[str], fallback: str = "look") -> ActionChoice:
  """Matches the last `<action>` to an admissible command (case and spacing ignored).

  Unparseable output and actions outside the admissible list fall back to `fallback`
  (the engine's 'look' by default), and the reason is reported.
  """
  parsed = parse_action(output)
  if parsed is None:
    return ActionChoice(fallback, None, "no_action")
  by_norm = {normalize_action(a): a for a in admissible}
  match = by_norm.get(normalize_action(parsed))
  if match is None:
    return ActionChoice(fallback, parsed, "not_admissible")
  return ActionChoice(match, parsed, None)


def alfworld_demo_text(task: str, steps: Sequence[tuple[str, str, str]],
                       obs_chars: int = 300) -> str:
  """A demonstration: the task, then per step the observation, `<think>` and `<action>`.

  `steps` are (observation before the action, thought, action); observations are cut to
  `obs_chars` like the history in the prompt, the first one without banner and task line.
  """
  lines = [f"Task: {task}"]
  for i, (obs, thought, action) in enumerate(steps):
    obs = scene_description(obs) if i == 0 else obs
    lines.append(f"Observation: {obs.strip()[:obs_chars]}")
    lines.append(f"<think>{thought}</think>")
    lines.append(f"<action>{action}</action>")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- Search-QA


def searchqa_prompt(question: str, turns: Sequence[tuple[str, str | None]], *,
                    mode: str = "vanilla", skill_text: str | None = None,
                    demo_text: str | None = None) -> Prompt:
  """The chat of a Search-QA step: instructions, question, then the turns so far.

  `turns` are (agent output, environment reply or None). The vanilla messages are exactly
  the teacher conversations' (`envs.searchqa.trajectory_messages`); a skill or demonstration
  block goes before the question in the first user message.
  """
  blocks = _blocks(mode, skill_text, demo_text, "question")
  messages = [{"role": "system", "content": AGENT_INSTRUCTIONS},
              {"role": "user", "content": "".join(blocks.values()) + question_prompt(question)}]
  for output, reply in turns:
    messages.append({"role": "assistant", "content": output})
    if reply is not None:
      messages.append({"role": "user", "content": reply})
  return Prompt(tuple(messages), blocks)


def searchqa_demo_text(trajectory: dict) -> str:
  """A teacher trajectory (`envs.searchqa.build_trajectories`) as one worked example."""
  lines = [question_prompt(trajectory["question"])]
  for turn in trajectory["turns"]:
    lines.append(f"<think>{turn['think']}</think>")
    lines.append(f"<search>{turn['search']}</search>")
    lines.append(turn["information"])
  lines.append(f"<think>{trajectory['final_think']}</think>")
  lines.append(f"<answer>{trajectory['answer']}</answer>")
  return "\n".join(lines)


__all__ = [
    "ALFWORLD_INSTRUCTION", "ActionChoice", "DEMO_HEADING", "MODES", "Prompt", "SKILL_HEADING",
    "alfworld_demo_text", "alfworld_prompt", "check_mode", "choose_action", "demo_block",
    "format_history", "normalize_action", "parse_action",
    "scene_description", "searchqa_demo_text", "searchqa_prompt", "skill_block",
    "task_description",
]
