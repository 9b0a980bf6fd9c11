"""Readers for the authors' data layout, so their released data drops in (writers: lskill_jax.io).

skill_pretrain/{train,val}.jsonl: one `{"text": str}` per line.
skill_ift/train.json: a JSON list of `{"context": str, "conversations": [{"role","content"}, ...]}`
(extra fields such as contextlen / conversationlen are allowed and ignored).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


class DataError(ValueError):
  """Training data is malformed; the message names the file and line."""


@dataclasses.dataclass
class ReadReport:
  """What a reader kept and what it skipped (and why)."""
  path: str
  kept: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)
  examples: list[str] = dataclasses.field(default_factory=list)

  def skip(self, reason: str, where: str) -> None:
    self.skipped[reason] = self.skipped.get(reason, 0) + 1
    if len(self.examples) < 5:
      self.examples.append(f"{where}: {reason}")

  def summary(self) -> str:
    parts = [f"{self.path}: kept {self.kept}"]
    parts += [f"skipped {n} ({r})" for r, n in sorted(self.skipped.items())]
    return ", ".join(parts)


def read_pretrain_jsonl(path: str, on_error: str = "raise") -> tuple[list[str], ReadReport]:
  """Texts of a skill_pretrain jsonl file.

  on_error="raise" stops at the first malformed line (file:line in the message);
  "skip" skips and counts malformed lines, records without text and empty texts.
  """
  if on_error not in ("raise", "skip"):
    raise ValueError("on_error must be 'raise' or 'skip'")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no data file at {path!r}; build one with `python -m launch.build_corpus`.")
  report = ReadReport(path)
  texts = []
  with open(path, "rb") as f:  # decoded line by line, so a bad byte is reported with its line
    for n, raw in enumerate(f, 1):
      where = f"{path}:{n}"
      text, problem = _pretrain_line(raw)
      if text is not None:
        texts.append(text)
        report.kept += 1
        continue
      if problem is None:
        continue  # a blank line
      if on_error == "raise":
        raise DataError(f"{where}: {problem}. Fix the line, or pass on_error='skip' to skip and count such lines.")
      report.skip(problem, where)
  if not texts:
    raise DataError(f"{path}: no usable documents ({report.summary()}).")
  return texts, report


def _pretrain_line(raw: bytes) -> tuple[str | None, str | None]:
  """(text, None) for a good jsonl line, (None, what is wrong) for a bad one, (None, None) if blank."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return None, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
  if not line.strip():
    return None, None
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    return None, f"malformed JSON ({e.msg})"
  if not isinstance(rec, dict) or "text" not in rec:
    return None, 'record has no "text" field'
  if not isinstance(rec["text"], str) or not rec["text"].strip():
    return None, "empty text"
  return rec["text"], None


def read_ift_json(path: str, on_error: str = "raise") -> tuple[list[dict], ReadReport]:
  """Records of a skill_ift train.json (validated: context text, role/content turns, one assistant turn)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no data file at {path!r}; make one with `python -m launch.make_teacher_data`.")
  try:
    with open(path, "rb") as f:
      raw = f.read()
    data = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); convert the file "
                    "to UTF-8.") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}).") from None
  if not isinstance(data, list):
    raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
  report = ReadReport(path)
  records = []
  for i, rec in enumerate(data):
    where = f"{path}: record {i}"
    problem = _ift_problem(rec)
    if problem is None:
      records.append({"context": rec["context"], "conversations": rec["conversations"]})
      report.kept += 1
    elif on_error == "raise":
      raise DataError(f"{where}: {problem}. Fix it, or pass on_error='skip'.")
    else:
      report.skip(problem, where)
  if not records:
    raise DataError(f"{path}: no usable records ({report.summary()}).")
  return records, report


def _ift_problem(rec: Any) -> str | None:
  if not isinstance(rec, dict):
    return "record is not an object"
  if not isinstance(rec.get("context"), str) or not rec["context"].strip():
    return 'missing or empty "context"'
  conv = rec.get("conversations")
  if not isinstance(conv, list) or not conv:
    return 'missing or empty "conversations"'
  for turn in conv:
    if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant") \
        or not isinstance(turn.get("content"), str):
      return "a turn is not {role: system|user|assistant, content: str}"
  if not any(t["role"] == "assistant" for t in conv):
    return "no assistant turn to supervise"
  return None
