"""Perturbed skill texts for the robustness protocol (DESIGN §6): noisy, reordered, plain-text
and paraphrased variants of a skill, and a writer that lays them out as skill directories.

Every variant works section by section (a `#` heading and what follows it) and draws its
randomness from (variant, seed, the section's text). So a section's variant does not depend on
the sections around it: the general component, byte-identical across the skills of an
environment, gets the same variant in every skill, and a skill's variant body is the variants
of its component files joined (reordered: in shuffled order). All functions are pure and
deterministic for a given seed; they take a document body (no front matter) unless stated.

    text = variant("noisy", body, seed=0)
    write_variants(out_dir, skills_root, env="alfworld")   # out_dir/<variant>/<env>/<skill>/
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from typing import Callable, Sequence

from lskill_jax.agents.skills import load_components, load_skill, load_skills
from lskill_jax.data.documents import COMPONENTS, join_components, split_front_matter
from lskill_jax.io import atomic_write_text

VARIANTS = ("noisy", "reordered", "plain_text", "paraphrased")

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])(\s+)(.*)$")
_NUMBERED = re.compile(r"^\d+[.)]$")
# Agent protocol tags (<think>, <action>, <search>, ...): kept intact by every variant, since a
# typo or synonym inside one would change the output format the skill teaches, not its wording.
_TAG = re.compile(r"(</?[A-Za-z_]+>)")
_CODE_OR_TAG = re.compile(r"(`[^`\n]*`|</?[A-Za-z_]+>)")


# ----------------------------------------------------------------------------- sections


def split_sections(text: str) -> list[str]:
  """The text cut before every heading line; each piece stripped (text before the first
  heading, if any, is a piece of its own). Blank-line-separated pieces join back as the body."""
  sections, current = [], []
  for line in text.strip().splitlines():
    if _HEADING.match(line) and any(l.strip() for l in current):
      sections.append("\n".join(current).strip())
      current = []
    current.append(line)
  if any(l.strip() for l in current):
    sections.append("\n".join(current).strip())
  return sections


def _rng(variant: str, seed: int, text: str) -> random.Random:
  digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
  return random.Random(f"{variant}/{seed}/{digest}")


def _per_section(text: str, variant: str, seed: int,
                 fn: Callable[[str, random.Random], str]) -> str:
  return "\n\n".join(fn(s, _rng(variant, seed, s)) for s in split_sections(text))


def _shuffled(items: Sequence, rng: random.Random) -> list:
  """A seeded permutation that differs from `items` whenever any reordering can differ."""
  out = list(items)
  rng.shuffle(out)
  if out == list(items) and len(set(items)) > 1:
    out = out[1:] + out[:1]  # a rotation moves every element
  return out


def _outside(pattern: re.Pattern, text: str, fn: Callable[[str], str]) -> str:
  """`fn` applied to the parts of `text` that `pattern` (one capturing group) does not match."""
  parts = pattern.split(text)
  return "".join(p if i % 2 else fn(p) for i, p in enumerate(parts))


def _match_case(word: str, like: str) -> str:
  if like.isupper() and len(like) > 1:
    return word.upper()
  return word[:1].upper() + word[1:] if like[:1].isupper() else word


# ----------------------------------------------------------------------------- noisy

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = {c: "".join(row[max(0, i - 1):i] + row[i + 1:i + 2])
               for row in _KEYBOARD for i, c in enumerate(row)}
_LONG_WORD = re.compile(r"[A-Za-z]{4,}")


def _typo(word: str, rng: random.Random) -> str:
  """One typo inside `word` (first letter kept): swap, drop, double or a neighbouring key."""
  i = rng.randrange(1, len(word) - 1)
  op = rng.choice(("swap", "drop", "double", "key"))
  if op == "swap" and word[i] != word[i + 1]:
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]
  if op == "double":
    return word[:i] + word[i] + word[i:]
  if op == "key" and word[i].lower() in _NEIGHBOURS:
    new = rng.choice(_NEIGHBOURS[word[i].lower()])
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1:]
  return word[:i] + word[i + 1:]


def noisy(text: str, seed: int = 0, rate: float = 0.1) -> str:
  """Typos: each word of four or more letters gets one typo with probability `rate`.

  Headings, line structure and protocol tags are kept; code spans are not spared (typos in a
  quoted command are part of what a sloppy skill text looks like).
  """
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"rate must be in [0, 1], got {rate}.")

  def section(s: str, rng: random.Random) -> str:
    def words(part: str) -> str:
      return _LONG_WORD.sub(lambda m: _typo(m.group(), rng) if rng.random() < rate else m.group(),
                            part)
    return "\n".join(line if _HEADING.match(line) else _outside(_TAG, line, words)
                     for line in s.splitlines())
  return _per_section(text, "noisy", seed, section)


# ----------------------------------------------------------------------------- reordered


def _reorder_lists(section: str, rng: random.Random) -> str:
  """Every run of consecutive list items shuffled; numbered items renumbered 1, 2, ..."""
  lines = section.splitlines()
  out, i = [], 0
  while i < len(lines):
    j = i
    while j < len(lines) and _ITEM.match(lines[j]):
      j += 1
    if j == i:
      out.append(lines[i])
      i += 1
      continue
    for n, line in enumerate(_shuffled(lines[i:j], rng), 1):
      indent, marker, space, body = _ITEM.match(line).groups()
      marker = f"{n}{marker[-1]}" if _NUMBERED.match(marker) else marker
      out.append(f"{indent}{marker}{space}{body}")
    i = j
  return "\n".join(out)


def reordered(text: str, seed: int = 0) -> str:
  """Sections in a shuffled order, and the items of every list shuffled within their section
  (numbered lists renumbered, so the numbers still count up). No line's words change."""
  sections = split_sections(_per_section(text, "reordered", seed, _reorder_lists))
  return "\n\n".join(_shuffled(sections, _rng("reordered", seed, text.strip())))


# ----------------------------------------------------------------------------- plain text

_INLINE = (
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),          # links and images: their text
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),                 # strong emphasis
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"), r"\1"),
    (re.compile(r"`([^`\n]*)`"), r"\1"),                      # code spans: their content
)


def _inline_plain(text: str) -> str:
  for pattern, repl in _INLINE:
    text = pattern.sub(repl, text)
  return text


def _sentence(text: str) -> str:
  text = text.strip().rstrip(";,")
  text = text[:1].upper() + text[1:]
  return text if text[-1:] in ".!?:" else text + "."


def _plain_section(section: str) -> str:
  paragraphs, current = [], []

  def flush():
    if current:
      paragraphs.append(" ".join(current))
      current.clear()

  for line in section.splitlines():
    stripped = line.strip()
    if not stripped or re.fullmatch(r"[-*_=]{3,}", stripped):  # blank line or rule
      flush()
    elif _HEADING.match(line):
      flush()
      paragraphs.append(_inline_plain(stripped.lstrip("#").strip()).rstrip(".:") + ":")
    elif _ITEM.match(line):
      current.append(_sentence(_inline_plain(_ITEM.match(line).group(4))))
    else:
      current.append(_inline_plain(stripped.lstrip(">").strip()))
  flush()
  return "\n\n".join(paragraphs)


def plain_text(text: str) -> str:
  """Markdown structure removed: headings become a lead-in line ("General:"), list items
  sentences run together into one paragraph, emphasis, code-span backticks and links their
  bare text. A leading front matter block becomes its description as an opening paragraph."""
  meta, body = split_front_matter(text)
  plain = "\n\n".join(_plain_section(s) for s in split_sections(body))
  description = str(meta.get("description", "")).strip()
  return f"{_sentence(description)}\n\n{plain}" if description else plain


# ----------------------------------------------------------------------------- paraphrased

# Synonyms for the vocabulary of the shipped skills; every form listed as it is written, so
# replacements keep their grammar. Words whose meaning is part of the protocol (action verbs,
# tag names, "answer", "search") are left out: changing them would change the instructions.
SYNONYMS = {
    "object": ("item",), "objects": ("items",), "receptacle": ("container",),
    "receptacles": ("containers",), "find": ("locate",), "usually": ("typically", "normally"),
    "often": ("frequently",), "exactly": ("precisely",), "instead of": ("rather than",),
    "at most": ("no more than",), "as soon as": ("the moment",), "check": ("verify",),
    "checking": ("verifying",), "wrong": ("incorrect",), "correct": ("right",),
    "goal": ("objective",), "goals": ("objectives",), "attribute": ("property",),
    "attributes": ("properties",), "short": ("brief",), "common": ("frequent",),
    "trap": ("pitfall",), "wastes": ("squanders",), "whole": ("entire",),
    "again": ("once more",), "right away": ("at once", "immediately"), "several": ("a few",),
    "named": ("specified",), "requested": ("asked-for",),
    "carrying": ("holding",), "remember": ("recall",), "mistake": ("error",),
    "passage": ("snippet",), "passages": ("snippets",), "sentence": ("phrase",),
    "rephrase": ("reword",), "fact": ("piece of information",), "separately": ("one by one",),
    "explicitly": ("clearly",), "note": ("record",), "searched": ("looked through",), "visible": ("in view",),
    "shows": ("displays",), "describes": ("depicts",), "requires": ("needs",),
    "need": ("require",), "needs": ("requires",),
}
_SYNONYM_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len, reverse=True))
                         + r")\b", re.IGNORECASE)
# Sentence openers rewritten into advice: "Use X." -> "You should use X.". Only verbs that
# cannot open a descriptive sentence here: "Look", "Pick", "Search" or "Answer" also name
# task types and protocol tags ("Look goals read like ...").
IMPERATIVES = frozenset(
    "use take go open keep visit find parse check read put carry copy give trust rephrase "
    "quote write stop walk compare ask try make remember prefer avoid change come budget fetch "
    "reason".split())
_ADVERBS = {"never": "You should never", "always": "You should always",
            "do not": "You should not", "don't": "You should not"}
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?]\s)|(?<=[.!?]\"\s))([A-Z][a-z']*(?: not)?)\b")


def _rewrite_openers(text: str, rng: random.Random, rate: float) -> str:
  def repl(m: re.Match) -> str:
    low = m.group(1).lower()
    if low in _ADVERBS and rng.random() < rate:
      return _ADVERBS[low]
    if low in IMPERATIVES and rng.random() < rate:
      return f"You should {low}"
    return m.group(0)
  return _SENTENCE_START.sub(repl, text)


def _paraphrase_line(line: str, rng: random.Random, rate: float) -> str:
  if _HEADING.match(line) or not line.strip():
    return line
  item = _ITEM.match(line)
  prefix, body = (line[:item.start(4)], item.group(4)) if item else ("", line)

  def words(part: str) -> str:
    def swap(m: re.Match) -> str:
      if rng.random() >= rate:
        return m.group()
      return _match_case(rng.choice(SYNONYMS[m.group().lower()]), m.group())
    return _SYNONYM_RE.sub(swap, part)

  # Openers first (they look at the original wording), then synonyms outside code and tags.
  body = _outside(_CODE_OR_TAG, _rewrite_openers(body, rng, rate), words)
  return prefix + body


def paraphrased(text: str, seed: int = 0, rate: float = 0.8) -> str:
  """A rule-based paraphrase (no language model is available offline): words from a small
  hand-written synonym table (`SYNONYMS`) are replaced, and imperative sentences are turned
  into advice ("Use X." -> "You should use X.", "Never X" -> "You should never X"), each
  with probability `rate`. Headings, code spans and protocol tags are left as they are."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"rate must be in [0, 1], got {rate}.")
  return _per_section(text, "paraphrased", seed, lambda s, rng: "\n".join(
      _paraphrase_line(line, rng, rate) for line in s.splitlines()))


# ----------------------------------------------------------------------------- all variants


def variant(name: str, text: str, seed: int = 0) -> str:
  """The `name` variant (one of VARIANTS) of a skill body, with each variant's default rate."""
  if name == "noisy":
    return noisy(text, seed)
  if name == "reordered":
    return reordered(text, seed)
  if name == "plain_text":
    return plain_text(text)
  if name == "paraphrased":
    return paraphrased(text, seed)
  raise ValueError(f"Unknown skill variant {name!r}; expected one of {VARIANTS}.")


def write_variants(out_dir: str, skills_root: str, env: str,
                   variants: Sequence[str] = VARIANTS, seed: int = 0) -> dict[str, str]:
  """Writes `out_dir/<variant>/<env>/<skill>/` for every skill `env` routes to: SKILL.md
  (the original front matter, then the variant body) and the variant of each component
  file, so the directory loads like `skills/<env>` (`load_skills(out_dir/<variant>/<env>, env)`).

  For the reordered variant the body holds the component sections in shuffled order (the
  README's general-task-mistakes order is what it perturbs). Returns variant -> its skill
  directory for `env`.
  """
  for name in variants:
    if name not in VARIANTS:
      raise ValueError(f"Unknown skill variant {name!r}; expected one of {VARIANTS}.")
  src = os.path.join(skills_root, env)
  written = {}
  for name in variants:
    dst = os.path.join(out_dir, name, env)
    for skill in load_skills(src, env):
      with open(load_skill(src, skill).path, encoding="utf-8") as f:
        original = f.read()
      _, body = split_front_matter(original)
      front = original[:len(original) - len(body)]
      parts = {p: variant(name, t, seed) for p, t in load_components(src, skill).items()}
      # Per-section randomness makes the body's variant the components' variants joined;
      # only the reordered body needs its own call (the section order is its perturbation).
      new_body = variant(name, body, seed) if name == "reordered" else join_components(parts)
      for part in COMPONENTS:
        atomic_write_text(os.path.join(dst, skill, f"{part}.md"), parts[part] + "\n")
      head = f"{front}\n" if front else ""
      atomic_write_text(os.path.join(dst, skill, "SKILL.md"), f"{head}{new_body}\n")
    written[name] = dst
  return written


__all__ = ["IMPERATIVES", "SYNONYMS", "VARIANTS", "noisy", "paraphrased", "plain_text",
           "reordered", "split_sections", "variant", "write_variants"]
