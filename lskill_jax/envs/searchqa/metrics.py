"""Search-QA scoring (exact match, token F1) and parsing of agent actions.

Normalisation follows the standard open-domain QA recipe used by the paper:
lower-case, drop punctuation, drop the articles "a", "an", "the", collapse
whitespace. EM is micro-averaged over all questions.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import string
from collections.abc import Iterable, Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

_COMPLETE_TAG = re.compile(r"<\s*(search|answer)\s*>(.*?)<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL)
_OPEN_TAG = re.compile(r"<\s*(search|answer)\s*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<\s*/?\s*(?:search|answer|think|information)\s*>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", re.IGNORECASE | re.DOTALL)


def normalize_answer(text: str) -> str:
  """Lower-cases and strips punctuation, articles and extra whitespace."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCT)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _as_list(golden_answers: str | Sequence[str]) -> list[str]:
  if isinstance(golden_answers, str):
    return [golden_answers]
  return [str(g) for g in golden_answers]


def exact_match(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
  """1.0 if the normalised prediction equals any normalised gold answer."""
  if prediction is None:
    return 0.0
  pred = normalize_answer(prediction)
  return float(any(pred == normalize_answer(g) for g in _as_list(golden_answers)))


def f1_score(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
  """SQuAD-style token F1, maximised over the gold answers."""
  if prediction is None:
    return 0.0
  pred_tokens = normalize_answer(prediction).split()
  best = 0.0
  for gold in _as_list(golden_answers):
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
      continue
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    best = max(best, 2 * precision * recall / (precision + recall))
  return best


def contains_answer(text: str, answer: str) -> bool:
  """Whether ``answer`` occurs in ``text`` as whole words, after normalisation.

  Used to check that retrieved passages really carry a fact: "66,078,000"
  matches "66078000" but "Niger" does not match inside "Nigeria".
  """
  needle = normalize_answer(answer)
  if not needle:
    return False
  haystack = f" {normalize_answer(text)} "
  return f" {needle} " in haystack


@dataclasses.dataclass(frozen=True)
class Action:
  """One parsed agent action: ``kind`` is "search", "answer" or "invalid"."""

  kind: str
  content: str = ""


def _strip_stray_tags(text: str) -> str:
  return " ".join(_ANY_TAG.sub(" ", text).split())


def _last_action(text: str) -> Action | None:
  """The last ``<search>``/``<answer>`` in ``text``; None if there is none.

  A complete tag pair is preferred, but an opening tag after the last
  complete pair whose closing tag never came (generation stopped on the
  stop string, or ran out of tokens) still counts, with the rest of the text
  as its content.
  """
  last_complete = None
  for m in _COMPLETE_TAG.finditer(text):
    last_complete = m
  tail_start = last_complete.end() if last_complete else 0
  last_open = None
  for m in _OPEN_TAG.finditer(text, tail_start):
    last_open = m
  if last_open is not None:
    content = _strip_stray_tags(text[last_open.end():])
    if content:
      return Action(last_open.group(1).lower(), content)
  if last_complete is not None:
    return Action(last_complete.group(1).lower(), _strip_stray_tags(last_complete.group(2)))
  return None


def parse_action(text: str) -> Action:
  """Parses model output into the action it asks for; the last tag wins.

  Tags written inside a closed ``<think>`` block are reasoning, not actions,
  so they are only used when nothing outside the block parses. Empty tags
  and text with no action tag give ``Action("invalid")``.
  """
  text = text or ""
  outside_think = _THINK_BLOCK.sub(" ", text)
  action = _last_action(outside_think) or _last_action(text)
  if action is None or not action.content:
    return Action("invalid", "")
  return action


def extract_answer(text: str) -> str | None:
  """Content of the last ``<answer>`` tag, or None when there is none."""
  action = parse_action(text)
  if action.kind == "answer":
    return action.content
  # An answer followed by a stray search still counts as the answer.
  answers = [m.group(2) for m in _COMPLETE_TAG.finditer(text or "") if m.group(1).lower() == "answer"]
  return _strip_stray_tags(answers[-1]) if answers else None


def extract_search(text: str) -> str | None:
  """Content of the last ``<search>`` tag when that is the action, else None."""
  action = parse_action(text)
  return action.content if action.kind == "search" else None


def summarize_scores(records: Iterable[dict]) -> dict:
  """Micro-averaged EM/F1 overall and per ``skill_type``.

  Each record needs ``em`` and ``f1`` (floats) and optionally ``skill_type``.
  """
  totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
  for rec in records:
    for key in ("all", rec.get("skill_type") or "unknown"):
      t = totals[key]
      t[0] += float(rec["em"])
      t[1] += float(rec["f1"])
      t[2] += 1
  return {
    key: {"em": em / n, "f1": f1 / n, "count": int(n)}
    for key, (em, f1, n) in sorted(totals.items())
    if n
  }


def hop_supported(passages: Sequence[dict], hop: dict) -> bool:
  """Whether retrieved ``passages`` really state the fact a hop asks for.

  With ``hop["support"]`` (ids of the passages stating the fact, known for
  our generated questions) one of those passages must be retrieved and
  contain the answer. Without it, some passage must mention both the hop's
  entity and its answer.
  """
  answer = str(hop["answer"])
  support = set(hop.get("support") or ())
  for p in passages:
    text = f"{p.get('title', '')}. {p.get('text', '')}"
    if support:
      if p.get("id") in support and contains_answer(text, answer):
        return True
    elif contains_answer(text, answer) and contains_answer(text, str(hop.get("entity", ""))):
      return True
  return False


def retrieval_recall(
  records: Sequence[dict], retriever, k: int = 3, query_field: str = "question"
) -> float:
  """Share of single-hop records whose query retrieves the supporting passage in the top k.

  ``query_field="question"`` searches with the question itself (recall@k of
  the direct questions); records must have exactly one hop.
  """
  usable = [r for r in records if len(r.get("hops") or ()) == 1]
  if not usable:
    return 0.0
  results = retriever.batch_search([r[query_field] for r in usable], k)
  hits = sum(hop_supported(res, r["hops"][0]) for r, res in zip(usable, results))
  return hits / len(usable)
