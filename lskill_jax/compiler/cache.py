"""On-disk adapter cache: compile each skill once, reuse it everywhere.

Entries live at CACHE/<base fingerprint>/<compiler id>/<backbone id>/<sha256 of the text>/ in
our adapter format (written atomically), so a changed text, compiler, backbone architecture,
weights or tokenizer never hits a stale entry. A document over the compiler's context is
stored as <sha256>.truncate or <sha256>.chunk: the over-length treatment changes the adapter.
`get` compiles all misses in batches and returns adapters in the order asked.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import jax
import numpy as np

from lskill_jax.adapter.adapter import Adapter, base_fingerprint, text_hash
from lskill_jax.adapter.files import AdapterFileError
from lskill_jax.compiler.skill_compiler import OVERLONG
from lskill_jax.data.documents import DocumentError, SkillDocument, parse_skill
from lskill_jax.sharding import to_host


def backbone_id(bb) -> str:
  """Weights and tokenizer of a backbone, cheaply: its dtypes, the first row of every weight
  and the vocabulary (two checkpoints of one architecture compile different adapters)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(bb.params)[0]:
    first = leaf[(0,) * (leaf.ndim - 1)] if leaf.ndim else leaf
    h.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    h.update(to_host(first).tobytes())
  if bb.tokenizer is not None:
    h.update(json.dumps(sorted(bb.tokenizer.get_vocab().items())).encode())
  return h.hexdigest()[:16]


class AdapterCache:
  """Adapter cache for one compiler."""

  def __init__(self, root: str, compiler):
    self.root = root
    self.compiler = compiler
    self.dir = os.path.join(root, base_fingerprint(compiler.backbone.config), compiler.checkpoint_id,
                            backbone_id(compiler.backbone))

  def path_for(self, text: str, treated: str | None = None) -> str:
    """Entry of a document body (front matter removed); `treated` ("truncate" or "chunk") for
    one over the context. The hash is the name: safe on every filesystem, whatever the text."""
    return os.path.join(self.dir, text_hash(text) + (f".{treated}" if treated else ""))

  def _load(self, text: str, overlong: str) -> Adapter | None:
    # A document within the context compiles the same whatever `overlong` says.
    for path in (self.path_for(text), self.path_for(text, overlong) if overlong != "error" else None):
      if path and os.path.isdir(path):
        try:
          return Adapter.load(path, backbone=self.compiler.backbone)
        except AdapterFileError:
          pass  # a damaged entry is recompiled and replaced
    return None

  def get(self, docs: Sequence[str | SkillDocument], *, overlong: str = "error",
          batch_size: int = 8) -> list[Adapter]:
    """Adapters for `docs`, compiling (and storing) only the ones not cached yet."""
    if overlong not in OVERLONG:
      raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}.")
    parsed = [d if isinstance(d, SkillDocument) else parse_skill(d, source=f"document {i}")
              for i, d in enumerate(docs)]
    out: list[Adapter | None] = [None] * len(parsed)
    misses: dict[str, list[int]] = {}
    for i, doc in enumerate(parsed):
      out[i] = self._load(doc.text, overlong)
      if out[i] is None:
        misses.setdefault(doc.text, []).append(i)
    if misses:
      order = list(misses)
      first = [parsed[misses[t][0]] for t in order]
      compiled = self.compiler.compile_documents(first, overlong=overlong, batch_size=batch_size)
      for text, result in zip(order, compiled.results):
        if isinstance(result, DocumentError):
          raise result
        result.save(self.path_for(text, overlong if result.metadata.get("treatment") else None))
        for i in misses[text]:
          out[i] = result
    return out  # type: ignore[return-value]

  def __contains__(self, doc: str | SkillDocument) -> bool:
    doc = doc if isinstance(doc, SkillDocument) else parse_skill(doc)
    return any(os.path.isdir(self.path_for(doc.text, t)) for t in (None, "truncate", "chunk"))
