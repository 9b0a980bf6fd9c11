"""Building the skill_pretrain jsonl form from sources of skill-like documents.

A source offers candidates (skill files, manual pages, package documentation: see
sources.py). Each is filtered by length in words, de-duplicated (exactly, on normalised text,
and optionally near-duplicates by MinHash of word 5-grams), and put in train or validation by
a hash of its normalised text, so adding files or sources never reshuffles the existing split.
The report says, per source, what was kept and why the rest was not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
import zlib
from typing import Iterable, Iterator

import numpy as np

from lskill_jax.data.documents import DocumentError, find_skill_files, read_skill
from lskill_jax.io import atomic_file


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A document a source offers, or (with `problem` set) something it found but cannot use."""
  origin: str
  text: str = ""
  problem: str = ""


@dataclasses.dataclass
class SourceReport:
  found: int = 0
  train: int = 0
  val: int = 0
  seconds: float = 0.0
  rejected: dict[str, int] = dataclasses.field(default_factory=dict)
  examples: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CorpusReport:
  sources: dict[str, SourceReport] = dataclasses.field(default_factory=dict)

  def source(self, name: str) -> SourceReport:
    return self.sources.setdefault(name, SourceReport())

  def reject(self, source: str, reason: str, origin: str) -> None:
    rep = self.source(source)
    rep.rejected[reason] = rep.rejected.get(reason, 0) + 1
    rep.examples.setdefault(reason, origin)

  @property
  def files(self) -> int:
    return sum(r.found for r in self.sources.values())

  @property
  def kept_train(self) -> int:
    return sum(r.train for r in self.sources.values())

  @property
  def kept_val(self) -> int:
    return sum(r.val for r in self.sources.values())

  def summary(self) -> str:
    lines = []
    for name, r in self.sources.items():
      took = f" in {r.seconds:.0f} s" if r.seconds else ""
      lines.append(f"{name}: {r.found} found{took}, kept {r.train} train + {r.val} validation")
      for reason, n in sorted(r.rejected.items(), key=lambda kv: -kv[1]):
        lines.append(f"  rejected {n}: {reason} (e.g. {r.examples[reason]})")
    if len(self.sources) > 1:
      lines.append(f"total: {self.files} found, kept {self.kept_train} train + "
                   f"{self.kept_val} validation")
    return "\n".join(lines)


def _normal(text: str) -> str:
  return re.sub(r"\s+", " ", text.lower()).strip()


class _NearDuplicates:
  """Finds an earlier document whose word 5-grams overlap this one's by at least `threshold`.

  MinHash signatures (32 hashes) estimate the Jaccard similarity; bands of 4 hashes find the
  few earlier documents worth comparing, so each check costs one pass over the words.
  """
  _PRIME = (1 << 31) - 1
  _BANDS, _ROWS = 8, 4

  def __init__(self, threshold: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = self._BANDS * self._ROWS
    self.threshold = threshold
    self.a = rng.integers(1, self._PRIME, n, dtype=np.uint64)[:, None]
    self.b = rng.integers(0, self._PRIME, n, dtype=np.uint64)[:, None]
    self.signatures: list[np.ndarray] = []
    self.origins: list[str] = []
    self.buckets: dict[tuple[int, bytes], list[int]] = {}

  def _signature(self, normal: str) -> np.ndarray:
    words = normal.split() or [""]
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
    k = min(5, len(words))
    grams = np.zeros(len(words) - k + 1, np.uint64)
    for j in range(k):                       # a polynomial hash of each run of k words
      grams = grams * np.uint64(1000003) + h[j:len(h) - k + 1 + j]
    grams = (grams >> np.uint64(32)) ^ (grams & np.uint64(0xFFFFFFFF))
    return ((self.a * grams[None, :] + self.b) % np.uint64(self._PRIME)).min(axis=1)

  def check(self, normal: str, origin: str) -> str | None:
    """The origin of an earlier near-duplicate, else None (and this document is remembered)."""
    sig = self._signature(normal)
    keys = [(i, sig[i * self._ROWS:(i + 1) * self._ROWS].tobytes()) for i in range(self._BANDS)]
    for key in keys:
      for j in self.buckets.get(key, ()):
        if np.mean(self.signatures[j] == sig) >= self.threshold:
          return self.origins[j]
    index = len(self.signatures)
    self.signatures.append(sig)
    self.origins.append(origin)
    for key in keys:
      self.buckets.setdefault(key, []).append(index)
    return None


class CorpusSelector:
  """Decides for each candidate: rejected (and why), or kept in train or validation."""

  def __init__(self, *, min_words: int = 30, max_words: int = 3000, val_fraction: float = 0.1,
               near_dup: float = 0.0):
    if not 0 <= val_fraction <= 1:
      raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}.")
    if not 0 <= near_dup <= 1:
      raise ValueError(f"near_dup must be a similarity in [0, 1] (0 turns it off), got {near_dup}.")
    self.min_words, self.max_words, self.val_fraction = min_words, max_words, val_fraction
    self.report = CorpusReport()
    self._seen: dict[bytes, str] = {}
    self._near = _NearDuplicates(near_dup) if near_dup else None

  def offer(self, source: str, cand: Candidate) -> str | None:
    """"train", "val", or None for a rejected candidate."""
    rep = self.report.source(source)
    rep.found += 1
    if cand.problem:
      self.report.reject(source, cand.problem, cand.origin)
      return None
    words = len(cand.text.split())
    if words < self.min_words:
      self.report.reject(source, f"shorter than {self.min_words} words", cand.origin)
      return None
    if words > self.max_words:
      self.report.reject(source, f"longer than {self.max_words} words", cand.origin)
      return None
    normal = _normal(cand.text)
    key = hashlib.sha256(normal.encode()).digest()
    if key in self._seen:
      self.report.reject(source, "duplicate", f"{cand.origin} (same as {self._seen[key]})")
      return None
    self._seen[key] = cand.origin
    if self._near is not None:
      earlier = self._near.check(normal, cand.origin)
      if earlier is not None:
        self.report.reject(source, f"near-duplicate (>= {self._near.threshold:g} similar)",
                           f"{cand.origin} (like {earlier})")
        return None
    # The first 32 bits of the text's hash place it: the same text always lands on the same side.
    bucket = int.from_bytes(key[:4], "big") / 0xFFFFFFFF
    if bucket < self.val_fraction:
      rep.val += 1
      return "val"
    rep.train += 1
    return "train"


def unusable(e: DocumentError) -> str:
  """A short reason for the report, one per kind of problem: "unreadable (not UTF-8 text)"."""
  detail = re.split(r" \(|;|\n", str(e).split(": ", 1)[-1])[0].rstrip(".")
  return f"unreadable ({detail})"


def skill_files(paths: list[str]) -> Iterator[Candidate]:
  """Candidates from files and directories of skill documents (front matter removed)."""
  files = sorted({f for p in paths for f in find_skill_files(p)})   # fails now for a bad path

  def candidates():
    for f in files:
      try:
        yield Candidate(f, read_skill(f).text)
      except DocumentError as e:
        yield Candidate(f, problem=unusable(e))
  return candidates()


def build_corpus(paths: list[str], *, min_words: int = 30, max_words: int = 3000,
                 val_fraction: float = 0.1) -> tuple[list[str], list[str], CorpusReport]:
  """(train texts, validation texts, report) from files and directories of skill documents."""
  selector = CorpusSelector(min_words=min_words, max_words=max_words, val_fraction=val_fraction)
  train, val = [], []
  for cand in skill_files(paths):
    split = selector.offer("files", cand)
    if split:
      (train if split == "train" else val).append(cand.text)
  return train, val, selector.report


def write_corpus(sources: Iterable[tuple[str, Iterable[Candidate]]], out_dir: str,
                 selector: CorpusSelector) -> CorpusReport:
  """Streams (name, candidates) sources into OUT/train.jsonl and OUT/val.jsonl.

  Texts go to disk as they are accepted (only their hashes stay in memory); both files
  replace earlier ones only once every source has been read.
  """
  with contextlib.ExitStack() as stack:
    files = {s: stack.enter_context(atomic_file(os.path.join(out_dir, f"{s}.jsonl")))
             for s in ("train", "val")}
    for name, candidates in sources:
      start = time.perf_counter()
      selector.report.source(name)
      for cand in candidates:
        split = selector.offer(name, cand)
        if split:
          files[split].write(json.dumps({"text": cand.text}, ensure_ascii=False) + "\n")
      selector.report.source(name).seconds += time.perf_counter() - start
  return selector.report
