"""Stage-1 examples (skill-document pretraining), as in the paper.

One example packs several documents. Each document independently becomes *completion*
(probability p_completion: the compiler sees a word-level prefix with 10-30% of the words cut
from the end, the user turn is the completion marker) or *reconstruction* (the compiler sees
the whole document, the user turn is the reconstruction marker). The target is always the
whole document. The compiler's evidence is the (possibly cut) documents, shuffled and joined
by the end-of-text token; the (user, assistant) pairs are shuffled again and rendered with
the chat template (thinking disabled); the loss covers assistant spans only.

Markers are spelled as plain text ("<COMP>", "<RECON>"): SmolLM2 has no spare embedding
rows, and plain text keeps every backbone row frozen and one code path for all backbones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lskill_jax.data.chat import tokenize_conversation

COMPLETION, RECONSTRUCTION = "<COMP>", "<RECON>"
CHAT_OVERHEAD = 11  # tokens a (user, assistant) pair adds around a document, for packing


@dataclasses.dataclass(frozen=True)
class Stage1Options:
  seq_len: int = 4096           # backbone (conversation) tokens per example
  context_len: int = 4087       # compiler (evidence) tokens per example
  p_completion: float = 0.5
  min_cut: float = 0.1          # fraction of words cut from the end in completion mode
  max_cut: float = 0.3


def cut_words(text: str, rng: np.random.Generator, min_cut: float, max_cut: float) -> str:
  """The document's prefix with a random 10-30% of its words removed from the end.

  Line structure of the kept prefix is preserved (we cut the original string at a word
  boundary rather than re-joining split words).
  """
  words = list(_word_spans(text))
  if len(words) < 2:
    return text
  keep = 1.0 - rng.uniform(min_cut, max_cut)
  k = min(max(int(round(len(words) * keep)), 1), len(words) - 1)
  return text[:words[k - 1][1]]


def _word_spans(text: str):
  start = None
  for i, ch in enumerate(text):
    if ch.isspace():
      if start is not None:
        yield start, i
        start = None
    elif start is None:
      start = i
  if start is not None:
    yield start, len(text)


def eot_id(tokenizer) -> int:
  for t in ("<|endoftext|>", "<|end_of_text|>"):
    if t in tokenizer.get_vocab():
      return tokenizer.convert_tokens_to_ids(t)
  return tokenizer.eos_token_id


def build_example(tokenizer, docs: list[str], rng: np.random.Generator, opts: Stage1Options,
                  modes: list[str] | None = None) -> dict[str, np.ndarray]:
  """One packed Stage-1 example as fixed-shape arrays.

  Returns doc_tokens/doc_mask [context_len] (left-padded evidence), tokens/weights [seq_len]
  (right-padded conversation; weights mark target tokens), and n_docs.
  `modes` forces each document's mode ("completion"/"reconstruction"), e.g. for validation.
  """
  if modes is None:
    modes = ["completion" if rng.random() < opts.p_completion else "reconstruction" for _ in docs]
  evidence, pairs = [], []
  for doc, mode in zip(docs, modes):
    if mode == "completion":
      evidence.append(cut_words(doc, rng, opts.min_cut, opts.max_cut))
      marker = COMPLETION
    else:
      evidence.append(doc)
      marker = RECONSTRUCTION
    pairs.append((marker, doc))
  order = rng.permutation(len(evidence))
  sep = eot_id(tokenizer)
  ev_ids: list[int] = []
  for j, i in enumerate(order):
    if j:
      ev_ids.append(sep)
    ev_ids.extend(tokenizer(evidence[i], add_special_tokens=False)["input_ids"])
  messages = []
  for i in rng.permutation(len(pairs)):
    messages += [{"role": "user", "content": pairs[i][0]}, {"role": "assistant", "content": pairs[i][1]}]
  ids, weights = tokenize_conversation(tokenizer, messages)
  return pack_arrays(ev_ids, ids, weights, opts.context_len, opts.seq_len, n_docs=len(docs))


OVERLONG = ("skip", "split")  # data.overlong: drop documents over the budget, or split them


def split_to_fit(text: str, n_tokens, budget: int, min_tokens: int = 32) -> list[str]:
  """Consecutive pieces of `text`, each at most `budget` tokens, cut at paragraphs.

  n_tokens(str) -> int counts tokens. Paragraphs (blank-line separated) are joined greedily;
  a paragraph over the budget is cut at lines, then at words. Counts of joined pieces are
  estimated as the sum of their parts plus one per line break and checked once at the end (a
  piece found over the budget is dropped). Pieces under `min_tokens` are dropped too: a
  heading or fragment alone carries too little to reconstruct.
  """
  def units(block: str, seps: tuple[str, ...]) -> list[tuple[str, int]]:
    n = n_tokens(block)
    if n <= budget or not seps:
      return [(block, n)]
    sep, rest = seps[0], seps[1:]
    parts = [p for p in block.split(sep) if p.strip()]
    if len(parts) <= 1:
      return units(block, rest)
    cost = 0 if sep == " " else 1  # a space joins the next word's token; a newline is its own
    out: list[tuple[str, int]] = []
    for piece, count in (u for p in parts for u in units(p, rest)):
      if out and out[-1][1] + cost + count <= budget:
        out[-1] = (out[-1][0] + sep + piece, out[-1][1] + cost + count)
      else:
        out.append((piece, count))
    return out

  pieces = [p.strip() for p, _ in units(text.strip(), ("\n\n", "\n", " "))]
  return [p for p in pieces if min_tokens <= n_tokens(p) <= budget]


def pack_arrays(ev_ids, ids, weights, context_len: int, seq_len: int, **extra) -> dict[str, np.ndarray]:
  """Fixed-shape arrays: evidence left-padded/truncated, conversation right-padded/truncated."""
  ev_ids = ev_ids[-context_len:] if len(ev_ids) > context_len else ev_ids
  doc_tokens = np.zeros(context_len, np.int32)
  doc_mask = np.zeros(context_len, np.int32)
  if ev_ids:
    doc_tokens[-len(ev_ids):] = ev_ids
    doc_mask[-len(ev_ids):] = 1
  ids, weights = ids[:seq_len], weights[:seq_len]
  tokens = np.zeros(seq_len, np.int32)
  w = np.zeros(seq_len, np.float32)
  seg = np.zeros(seq_len, np.int32)
  tokens[:len(ids)] = ids
  w[:len(weights)] = weights
  seg[:len(ids)] = 1
  out = {"doc_tokens": doc_tokens, "doc_mask": doc_mask, "tokens": tokens, "weights": w,
         "segment_ids": seg}
  out.update({k: np.asarray(v, np.int32) for k, v in extra.items()})
  return out


def pack_documents(lengths: list[int], budget: int, open_bins: int = 100) -> list[list[int]]:
  """First-fit packing of documents (by token cost) into groups of at most `budget`.

  Deterministic; at most `open_bins` groups are open at once (the fullest is closed when a
  document fits none and no bin can be opened). A document over budget is a group alone.
  """
  groups: list[list[int]] = []
  bins: list[tuple[int, list[int]]] = []  # (used, members)
  for i, n in enumerate(lengths):
    cost = n + CHAT_OVERHEAD
    if cost > budget:
      groups.append([i])
      continue
    for j, (used, members) in enumerate(bins):
      if used + cost <= budget:
        bins[j] = (used + cost, members + [i])
        break
    else:
      if len(bins) >= open_bins:
        fullest = max(range(len(bins)), key=lambda j: bins[j][0])
        groups.append(bins.pop(fullest)[1])
      bins.append((cost, [i]))
  groups.extend(members for _, members in bins)
  return groups
