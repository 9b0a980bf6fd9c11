"""Passage retrieval for Search-QA: BM25 by default, any user retriever by hook.

Every retriever implements the ``Retriever`` protocol: ``search`` for one query
and ``batch_search`` for many, each returning top-k passages (dicts with
``id``, ``title``, ``text``), best first.

The paper retrieves with E5 over wiki-18. To do the same here, write a factory
``build(passages: list[Passage]) -> Retriever`` in your own module and call
``load_retriever(corpus_path, factory="your_module:build")`` (or pass
``--corpus``/``--retriever_factory`` to the launch scripts); the corpus may be
wiki-18 JSONL (``{"id","contents"}``) or ours (``{"id","title","text"}``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from lskill_jax.envs.searchqa.corpus import Passage, load_corpus
from lskill_jax.envs.searchqa.facts import fold_accents

DEFAULT_TOPK = 3


@runtime_checkable
class Retriever(Protocol):
  """What the environment and the teacher need from a retriever."""

  def search(self, query: str, k: int = DEFAULT_TOPK) -> list[Passage]:
    ...

  def batch_search(self, queries: Sequence[str], k: int = DEFAULT_TOPK) -> list[list[Passage]]:
    ...


# Function words plus question words: they carry no topic, and left in they
# make "What is ..." match every passage containing "is".
_STOPWORDS = frozenset(
  """a an and are as at be but by for if in into is it its no not of on or such
  that the their then there these they this to was will with what which who
  whom whose where when how do does did has have had can could please tell me
  i you name""".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
  """A light plural/gerund stripper, so "borders" matches "border".

  A full stemmer would be a further dependency; plural and -ing forms cover
  the mismatches between our question templates and passages.
  """
  if len(word) > 5 and word.endswith("ing"):
    return word[:-3]
  if len(word) > 4 and word.endswith("ies"):
    return word[:-3] + "y"
  if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
    return word[:-1]
  return word


def tokenize(text: str) -> list[str]:
  """Lower-cased, accent-folded, stop-word-free, lightly stemmed word tokens."""
  words = _WORD.findall(fold_accents(text).lower())
  return [_stem(w) for w in words if w not in _STOPWORDS]


def passage_text(p: Passage) -> str:
  """What gets indexed: the title carries the entity name, so it is included."""
  return f"{p['title']}. {p['text']}"


class BM25Retriever:
  """BM25 (Lucene variant, via ``bm25s``) over a list of passages."""

  # b is lower than the usual 0.75: our long passages are lists (borders,
  # divisions) whose length does not dilute their topic, and full length
  # normalisation ranked a bare "X borders China" above China's own list.
  def __init__(self, passages: Sequence[Passage], k1: float = 1.2, b: float = 0.3):
    try:
      import bm25s  # pylint: disable=import-outside-toplevel
    except ImportError as err:
      raise ImportError("BM25 retrieval needs bm25s; install it with: pip install bm25s==0.3.16") from err
    if not passages:
      raise ValueError("BM25Retriever got an empty corpus; build or load passages first.")
    self.passages = list(passages)
    self._bm25 = bm25s.BM25(k1=k1, b=b)
    self._bm25.index([tokenize(passage_text(p)) for p in self.passages], show_progress=False)

  def search(self, query: str, k: int = DEFAULT_TOPK) -> list[Passage]:
    """Top-k passages for one query."""
    return self.batch_search([query], k)[0]

  def batch_search(self, queries: Sequence[str], k: int = DEFAULT_TOPK) -> list[list[Passage]]:
    """Top-k passages for each query; passages with no matching term are dropped."""
    if not queries:
      return []
    k = max(1, min(int(k), len(self.passages)))
    tokens = [tokenize(q) for q in queries]
    docs, scores = self._bm25.retrieve(tokens, k=k, show_progress=False, n_threads=0)
    results = []
    for row_docs, row_scores in zip(docs, scores):
      results.append([self.passages[int(d)] for d, s in zip(row_docs, row_scores) if s > 0])
    return results


def _import_factory(spec: str) -> Callable[[list[Passage]], Retriever]:
  module_name, sep, attr = spec.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"Retriever factory {spec!r} must look like 'package.module:function'.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as err:
    raise ImportError(f"Cannot import retriever factory module {module_name!r}: {err}") from err
  factory = getattr(module, attr, None)
  if not callable(factory):
    raise ValueError(f"{spec!r}: {module_name} has no callable named {attr!r}.")
  return factory


def load_retriever(
  passages: Sequence[Passage] | None = None,
  corpus_path: str | None = None,
  factory: str | Callable[[list[Passage]], Retriever] | None = None,
) -> Retriever:
  """Builds the retriever the environment uses.

  Args:
    passages: an in-memory corpus; used when ``corpus_path`` is not given.
    corpus_path: a JSONL corpus (ours or wiki-18 style) to load instead.
    factory: None for BM25; otherwise a callable, or a
      ``"package.module:function"`` string, that takes the passage list and
      returns an object with ``search`` and ``batch_search`` (e.g. a dense
      E5 retriever over wiki-18).
  """
  if corpus_path:
    passages = load_corpus(corpus_path)
  if passages is None:
    raise ValueError("load_retriever needs passages or corpus_path; build the corpus first.")
  passages = list(passages)
  if factory is None:
    return BM25Retriever(passages)
  if isinstance(factory, str):
    factory = _import_factory(factory)
  retriever = factory(passages)
  if not isinstance(retriever, Retriever):
    raise TypeError(
      f"Retriever factory returned {type(retriever).__name__}, which lacks "
      "search(query, k) and batch_search(queries, k)."
    )
  return retriever
