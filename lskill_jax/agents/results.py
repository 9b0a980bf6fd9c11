"""The results file of an evaluation, and the keys that let a rerun skip finished episodes.

Each finished episode is one JSON line keyed by environment, split, mode, a hash of the
settings that change its outcome, and the episode id; a rerun with the same settings skips
the keys already present, a run with other settings starts its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

from lskill_jax.io import read_jsonl


def settings_id(settings: Mapping) -> str:
  """A short hash of everything that changes an episode's outcome (model, prompts, limits)."""
  blob = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def text_digest(texts: Mapping[str, str] | None) -> str | None:
  """A hash of named texts (skills, demonstrations) for the settings of a run."""
  if not texts:
    return None
  return hashlib.sha256(json.dumps(dict(texts), sort_keys=True).encode()).hexdigest()[:12]


class ResultsLog:
  """Episode records, one JSON object per line, appended as each episode finishes.

  Each append is one `write` on a file opened with O_APPEND, then fsync: lines never
  interleave and a finished episode survives a crash. A line cut short by a crash is
  dropped when the file is opened again, so that episode simply runs again.
  """

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._repair()

  def _repair(self) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb") as f:
      data = f.read()
    if data and not data.endswith(b"\n"):
      with open(self.path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)

  def records(self) -> list[dict]:
    """Every complete record in the file."""
    if not os.path.exists(self.path):
      return []
    return read_jsonl(self.path, fix="remove that line to rerun its episode")

  def finished_keys(self) -> set[str]:
    return {r["key"] for r in self.records() if "key" in r}

  def append(self, record: dict) -> None:
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      written = os.write(fd, line)
      if written != len(line):
        raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes).")
      os.fsync(fd)
    finally:
      os.close(fd)


def episode_key(env: str, split: str, mode: str, settings: str, episode_id: str) -> str:
  return f"{env}/{split}/{mode}/{settings}/{episode_id}"

