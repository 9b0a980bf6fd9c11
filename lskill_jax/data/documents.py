"""Skill documents: plain text or Markdown, optionally a SKILL.md with YAML front matter.

The compiler sees the document body (front matter removed); name and description from the
front matter are kept as metadata. Empty, whitespace-only and binary / non-UTF-8 inputs are
refused with a DocumentError naming the source, as is a file that cannot be read (a dangling
symlink, a symlink loop, no permission).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from absl import logging
import yaml

SKILL_SUFFIXES = (".md", ".markdown", ".txt")
# A skill's component files (skills/README.md), in the order its SKILL.md body joins them.
COMPONENTS = ("general", "task", "mistakes")


class DocumentError(ValueError):
  """A skill document cannot be compiled (empty, binary, malformed front matter, too long)."""


@dataclasses.dataclass(frozen=True)
class SkillDocument:
  text: str                          # what the compiler reads
  name: str = ""
  description: str = ""
  front_matter: tuple = ()
  source: str = ""


def _as_text(data: str | bytes, source: str) -> str:
  if isinstance(data, bytes):
    if b"\x00" in data:
      raise DocumentError(f"{source}: binary data (NUL bytes); a skill must be UTF-8 text.")
    try:
      data = data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DocumentError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start}); "
                          "convert it to UTF-8 first.") from None
  if "\x00" in data:
    raise DocumentError(f"{source}: contains NUL characters; a skill must be plain text.")
  control = sum(1 for ch in data if ord(ch) < 32 and ch not in "\n\r\t\f")
  if data and control > 0.05 * len(data):
    raise DocumentError(f"{source}: {control} control characters; this looks like binary data.")
  return data


def split_front_matter(text: str, source: str = "<text>") -> tuple[dict[str, Any], str]:
  """({front matter}, body) for a document that may start with a `---` YAML block."""
  stripped = text.lstrip("\ufeff")
  if not stripped.startswith("---"):
    return {}, text
  lines = stripped.splitlines(keepends=True)
  if lines[0].strip() != "---":
    return {}, text
  for i in range(1, len(lines)):
    if lines[i].strip() in ("---", "..."):
      try:
        meta = yaml.safe_load("".join(lines[1:i])) or {}
      except yaml.YAMLError as e:
        raise DocumentError(f"{source}: malformed YAML front matter ({e}).") from None
      if not isinstance(meta, dict):
        raise DocumentError(f"{source}: front matter must be a YAML mapping, got {type(meta).__name__}.")
      return meta, "".join(lines[i + 1:])
  raise DocumentError(f"{source}: front matter opened with '---' is never closed.")


def parse_skill(data: str | bytes, source: str = "<text>") -> SkillDocument:
  """A SkillDocument from raw text/bytes; raises DocumentError for unusable input."""
  text = _as_text(data, source)
  meta, body = split_front_matter(text, source)
  body = body.strip()
  if not body:
    what = "only front matter" if meta else ("empty" if not text else "whitespace only")
    raise DocumentError(f"{source}: the skill document is {what}; nothing to compile.")
  return SkillDocument(text=body, name=str(meta.get("name", "")),
                       description=str(meta.get("description", "")),
                       front_matter=tuple(sorted((str(k), str(v)) for k, v in meta.items())),
                       source=source)


def join_components(parts: Mapping[str, str]) -> str:
  """The SKILL.md body made of its components (general, task, mistakes; one blank line apart)."""
  return "\n\n".join(parts[p].strip() for p in COMPONENTS)


def read_skill(path: str) -> SkillDocument:
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DocumentError(f"{path}: cannot be read ({e.strerror or e}).") from None
  return parse_skill(data, source=path)


def find_skill_files(path: str) -> list[str]:
  """A file itself, or every .md/.txt file under a directory (README files skipped), sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no skill file or directory at {path!r}.")
  found = []

  def unreadable(err: OSError):
    logging.warning("skipped %s: cannot list it (%s).", err.filename, err.strerror)

  for root, _, files in os.walk(path, onerror=unreadable):
    for f in files:
      if f.lower().endswith(SKILL_SUFFIXES) and not f.lower().startswith("readme"):
        found.append(os.path.join(root, f))
  if not found:
    raise FileNotFoundError(f"{path}: no skill documents (*.md, *.txt) found.")
  return sorted(found)
