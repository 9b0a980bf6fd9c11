"""Skill documents for the agents: reading `skills/<env>/<skill>/SKILL.md` and routing tasks.

A skill document opens with a YAML front matter block (`---` lines); the body after it is
what the in-context baseline shows and what the compiler reads, both parsed by
`lskill_jax.data.documents` (the one reader of a skill file). ALFWorld has six task types
and five skills (Pick2 uses the pick skill); Search-QA routes a question by its skill type.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from lskill_jax.data.documents import COMPONENTS, read_skill

# ALFWorld task type -> skill directory (skills/README.md).
ALFWORLD_SKILL_FOR_TASK = {
    "pick_and_place_simple": "pick",
    "pick_two_obj_and_place": "pick",
    "look_at_obj_in_light": "look",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
}
# Search-QA skill type -> skill directory (the paper's files call multi_hop multi_hop_reasoning).
SEARCHQA_SKILL_FOR_TYPE = {
    "direct_retrieval": "direct_retrieval",
    "multi_hop": "multi_hop",
    "multi_hop_reasoning": "multi_hop",
    "comparison": "comparison",
}
SKILL_ROUTES = {"alfworld": ALFWORLD_SKILL_FOR_TASK, "searchqa": SEARCHQA_SKILL_FOR_TYPE}


class SkillError(ValueError):
  """A skill document is missing, or a task has no skill."""


@dataclasses.dataclass(frozen=True)
class SkillDoc:
  """One skill: its name (directory), the body text and where it was read from."""
  name: str
  text: str
  path: str


def load_skill(skill_dir: str, name: str) -> SkillDoc:
  """Reads `<skill_dir>/<name>/SKILL.md` (or the paper's flat `<skill_dir>/<name>.txt`).

  The text is the document body as the compiler reads it (`read_skill`: front matter removed);
  an empty, binary or unreadable file raises its DocumentError.
  """
  candidates = [os.path.join(skill_dir, name, "SKILL.md"), os.path.join(skill_dir, f"{name}.txt")]
  path = next((c for c in candidates if os.path.isfile(c)), None)
  if path is None:
    raise SkillError(f"No skill document for {name!r}: looked for {candidates}. Point the "
                     "skill directory at skills/<env> (see skills/README.md).")
  return SkillDoc(name, read_skill(path).text, path)


def load_components(skill_dir: str, name: str) -> dict[str, str]:
  """Component -> text of `<skill_dir>/<name>/{general,task,mistakes}.md` (skills/README.md).

  Each text is stripped; the body of SKILL.md is the three joined by one blank line.
  """
  texts = {}
  for part in COMPONENTS:
    path = os.path.join(skill_dir, name, f"{part}.md")
    if not os.path.isfile(path):
      raise SkillError(f"No {part} component for skill {name!r}: {path} is missing (each skill "
                       "directory holds general.md, task.md and mistakes.md, skills/README.md).")
    texts[part] = read_skill(path).text
  return texts


def load_skills(skill_dir: str, env: str) -> dict[str, SkillDoc]:
  """Every skill `env` routes to, by skill name."""
  routes = _routes(env)
  return {name: load_skill(skill_dir, name) for name in sorted(set(routes.values()))}


def skill_name_for(env: str, task_type: str) -> str:
  """The skill a task type (ALFWorld) or question skill type (Search-QA) is routed to."""
  routes = _routes(env)
  if task_type not in routes:
    raise SkillError(f"No {env} skill for task type {task_type!r}; known types: {sorted(routes)}.")
  return routes[task_type]


def skill_texts_by_type(skills: Mapping[str, SkillDoc], env: str) -> dict[str, str]:
  """Task type -> skill text, for every type the environment routes."""
  return {t: skills[name].text for t, name in _routes(env).items() if name in skills}


def _routes(env: str) -> dict[str, str]:
  if env not in SKILL_ROUTES:
    raise SkillError(f"Unknown environment {env!r}; expected one of {sorted(SKILL_ROUTES)}.")
  return SKILL_ROUTES[env]
