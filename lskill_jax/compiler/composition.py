"""Composing two (or more) skills into one adapter, the three ways DESIGN §6 compares.

A skill here is its components, {"general": ..., "task": ..., "mistakes": ...}
(`agents.skills.load_components`); its full text is the SKILL.md body they make up. The
compiler is any function from texts to adapters (`SkillCompiler.compile`). Adding adapters
means adding their updates ΔW = s·A·B, which `weighted_sum` does exactly by concatenating
ranks: the composed adapter's rank is the sum of its parts' (`Adapter.reduce_rank` shrinks it).

    sum_full(compile_fn, {"look": look, "pick": pick})         # ΔW(look) + ΔW(pick)
    concatenated(compile_fn, {"look": look, "pick": pick})     # ΔW(look text + pick text)
    component_merge(compile_fn, {"look": look, "pick": pick})  # general once, + tasks + mistakes
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from lskill_jax.adapter.adapter import Adapter, weighted_sum
from lskill_jax.data.documents import COMPONENTS, join_components

# texts -> one (unbatched) adapter per text.
CompileFn = Callable[[Sequence[str]], Sequence[Adapter]]
Skills = Mapping[str, Mapping[str, str]]  # skill name -> component -> text
METHODS = ("sum_full", "concatenated", "component_merge")


def _check(skills: Skills) -> None:
  if not skills:
    raise ValueError("composition needs at least one skill.")
  for name, parts in skills.items():
    missing = [c for c in COMPONENTS if not str(parts.get(c, "")).strip()]
    if missing:
      raise ValueError(f"skill {name!r} lacks the component(s) {missing}; a skill is "
                       f"{{{', '.join(COMPONENTS)}}} -> text (skills/README.md).")


def _compiled(compile_fn: CompileFn, texts: Sequence[str]) -> list[Adapter]:
  adapters = list(compile_fn(list(texts)))
  if len(adapters) != len(texts):
    raise ValueError(f"the compile function returned {len(adapters)} adapters for "
                     f"{len(texts)} texts.")
  return adapters


def sum_full(compile_fn: CompileFn, skills: Skills,
             weights: Mapping[str, float] | None = None) -> Adapter:
  """Σ_skill w_skill · ΔW(full text of the skill) (weights by skill name, default 1).

  A component the skills share is counted once per skill: the failure this baseline shows.
  """
  _check(skills)
  names = list(skills)
  adapters = _compiled(compile_fn, [join_components(skills[n]) for n in names])
  return weighted_sum(adapters, [float((weights or {}).get(n, 1.0)) for n in names])


def concatenated_text(skills: Skills, separator: str = "\n\n") -> str:
  """The full texts of the skills, in the mapping's order, joined by `separator`."""
  _check(skills)
  return separator.join(join_components(parts) for parts in skills.values())


def concatenated(compile_fn: CompileFn, skills: Skills, separator: str = "\n\n") -> Adapter:
  """ΔW of one document: the skills' full texts concatenated (longer than any text the
  compiler was trained on, which is why this baseline is expected to fail)."""
  return _compiled(compile_fn, [concatenated_text(skills, separator)])[0]


@dataclasses.dataclass(frozen=True)
class MergeTerm:
  """One distinct component text of a component merge, its weight and where it comes from."""
  text: str
  weight: float
  owners: tuple[tuple[str, str], ...]  # (skill, component) pairs with this text


def _key(text: str) -> str:
  # Components are the same when only white space differs (a trailing newline, re-wrapping).
  return " ".join(text.split())


def merge_plan(skills: Skills, weights: Mapping[str, float] | None = None) -> list[MergeTerm]:
  """The distinct component texts of `skills` (first-seen order) with their weights.

  `weights` keys are a component ("general", "task", "mistakes") or "component/skill"
  ("task/look"), the latter winning; unnamed ones weigh 1. A shared component is one term
  (added once), so its owners must agree on its weight.
  """
  _check(skills)
  weights = dict(weights or {})
  known = set(COMPONENTS) | {f"{c}/{s}" for c in COMPONENTS for s in skills}
  unknown = sorted(set(weights) - known)
  if unknown:
    raise ValueError(f"unknown component weight(s) {unknown}; use a component name "
                     f"{COMPONENTS} or 'component/skill' for skills {sorted(skills)}.")
  terms: dict[str, MergeTerm] = {}
  for skill, parts in skills.items():
    for comp in COMPONENTS:
      text = parts[comp].strip()
      w = float(weights.get(f"{comp}/{skill}", weights.get(comp, 1.0)))
      key = _key(text)
      if key in terms:
        term = terms[key]
        if term.weight != w:
          raise ValueError(f"{comp} of {skill!r} is the same text as {term.owners[0]} but "
                           f"weighs {w}, not {term.weight}; a shared component is added once "
                           "and takes one weight.")
        terms[key] = dataclasses.replace(term, owners=term.owners + ((skill, comp),))
      else:
        terms[key] = MergeTerm(text, w, ((skill, comp),))
  return list(terms.values())


def component_merge(compile_fn: CompileFn, skills: Skills,
                    weights: Mapping[str, float] | None = None) -> Adapter:
  """Σ over distinct components c of w_c · ΔW(c): each distinct text compiled once, in one
  call, and a shared component (e.g. an environment's general section) added once."""
  terms = merge_plan(skills, weights)
  adapters = _compiled(compile_fn, [t.text for t in terms])
  return weighted_sum(adapters, [t.weight for t in terms])


def compose(method: str, compile_fn: CompileFn, skills: Skills,
            weights: Mapping[str, float] | None = None) -> Adapter:
  """The composed adapter by `method` (one of METHODS); `weights` as that method takes them
  (sum_full: by skill; component_merge: by component; concatenated: none)."""
  if method == "sum_full":
    return sum_full(compile_fn, skills, weights)
  if method == "concatenated":
    if weights:
      raise ValueError("the concatenated method compiles one text and takes no weights.")
    return concatenated(compile_fn, skills)
  if method == "component_merge":
    return component_merge(compile_fn, skills, weights)
  raise ValueError(f"Unknown composition method {method!r}; expected one of {METHODS}.")


__all__ = ["CompileFn", "METHODS", "MergeTerm", "component_merge", "compose", "concatenated",
           "concatenated_text", "merge_plan", "sum_full"]
