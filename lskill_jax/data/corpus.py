"""Turning directories of Markdown / SKILL.md files into the skill_pretrain jsonl form.

Documents are parsed like compiler inputs (front matter removed), normalised for
de-duplication (case, whitespace), filtered by length in words, and split into train and
validation deterministically (by a hash of the text, so adding files never reshuffles the
existing split). The report says what was kept and why the rest was not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from lskill_jax.compiler.documents import DocumentError, find_skill_files, read_skill


@dataclasses.dataclass
class CorpusReport:
  files: int = 0
  kept_train: int = 0
  kept_val: int = 0
  rejected: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def reject(self, reason: str, path: str) -> None:
    self.rejected.setdefault(reason, []).append(path)

  def summary(self) -> str:
    lines = [f"{self.files} files: kept {self.kept_train} train + {self.kept_val} validation"]
    for reason, paths in sorted(self.rejected.items()):
      lines.append(f"  rejected {len(paths)}: {reason} (e.g. {paths[0]})")
    return "\n".join(lines)


def _normal(text: str) -> str:
  return re.sub(r"\s+", " ", text.lower()).strip()


def build_corpus(paths: list[str], *, min_words: int = 30, max_words: int = 3000,
                 val_fraction: float = 0.1) -> tuple[list[str], list[str], CorpusReport]:
  """(train texts, validation texts, report) from files and directories of skill documents."""
  report = CorpusReport()
  seen: dict[str, str] = {}
  train, val = [], []
  files = sorted({f for p in paths for f in find_skill_files(p)})
  report.files = len(files)
  for f in files:
    try:
      text = read_skill(f).text
    except DocumentError as e:
      report.reject(f"unreadable ({str(e).split(': ', 1)[-1]})", f)
      continue
    words = len(text.split())
    if words < min_words:
      report.reject(f"shorter than {min_words} words", f)
      continue
    if words > max_words:
      report.reject(f"longer than {max_words} words", f)
      continue
    key = hashlib.sha256(_normal(text).encode()).hexdigest()
    if key in seen:
      report.reject("duplicate", f"{f} (same as {seen[key]})")
      continue
    seen[key] = f
    bucket = int(key[:8], 16) / 0xFFFFFFFF
    (val if bucket < val_fraction else train).append(text)
  report.kept_train, report.kept_val = len(train), len(val)
  return train, val, report
