"""On-disk adapter cache: compile each skill once, reuse it everywhere.

Entries live at CACHE/<base fingerprint>/<compiler id>/<sha256 of the text>/ in our adapter
format (written atomically), so a changed text, compiler or backbone never hits a stale
entry. `get` compiles all misses in batches and returns adapters in the order asked.
"""

from __future__ import annotations

import os
from typing import Sequence

from lskill_jax.adapter.adapter import Adapter, base_fingerprint, text_hash
from lskill_jax.adapter.files import AdapterFileError
from lskill_jax.compiler.documents import DocumentError, SkillDocument, parse_skill


class AdapterCache:
  """Adapter cache for one compiler."""

  def __init__(self, root: str, compiler):
    self.root = root
    self.compiler = compiler
    self.dir = os.path.join(root, base_fingerprint(compiler.backbone.config), compiler.checkpoint_id)

  def path_for(self, text: str) -> str:
    """Entry of a document body (front matter removed). The hash is the whole name: safe on
    every filesystem, whatever the text."""
    return os.path.join(self.dir, text_hash(text))

  def get(self, docs: Sequence[str | SkillDocument], *, overlong: str = "error",
          batch_size: int = 8) -> list[Adapter]:
    """Adapters for `docs`, compiling (and storing) only the ones not cached yet."""
    parsed = [d if isinstance(d, SkillDocument) else parse_skill(d, source=f"document {i}")
              for i, d in enumerate(docs)]
    out: list[Adapter | None] = [None] * len(parsed)
    misses: dict[str, list[int]] = {}
    for i, doc in enumerate(parsed):
      path = self.path_for(doc.text)
      if os.path.isdir(path):
        try:
          out[i] = Adapter.load(path, backbone=self.compiler.backbone)
          continue
        except AdapterFileError:
          pass  # a damaged entry is recompiled and replaced
      misses.setdefault(doc.text, []).append(i)
    if misses:
      order = list(misses)
      first = [parsed[misses[t][0]] for t in order]
      compiled = self.compiler.compile_documents(first, overlong=overlong, batch_size=batch_size)
      for text, result in zip(order, compiled.results):
        if isinstance(result, DocumentError):
          raise result
        result.save(self.path_for(text))
        for i in misses[text]:
          out[i] = result
    return out  # type: ignore[return-value]

  def __contains__(self, doc: str | SkillDocument) -> bool:
    doc = doc if isinstance(doc, SkillDocument) else parse_skill(doc)
    return os.path.isdir(self.path_for(doc.text))
