"""Exact token accounting: the ids a step sends, and how many of them are skill or demo text.

`encode_prompt` renders the chat template and tokenizes exactly as
`lskill_jax.inference.chat_prompt_ids` does (thinking disabled, no extra special tokens),
so the ids it returns are the ids the runner sends to `generate_ids`; the prefill count of a
step is their length. The tokenizer's character offsets attribute each token to the block
(skill, demonstration) it starts in, which is the share of the prompt the block costs.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence


class PromptBlockError(ValueError):
  """A prompt block could not be located in the rendered chat text."""


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
  """The chat-template text of `messages` with the generation prompt, thinking disabled."""
  return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                       enable_thinking=False)


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
  """The ids of one prompt and the number of them that belong to each named block."""
  ids: tuple[int, ...]
  block_tokens: Mapping[str, int]

  @property
  def prefill(self) -> int:
    return len(self.ids)


def encode_prompt(tokenizer, messages: Sequence[dict],
                  blocks: Mapping[str, str] | None = None) -> EncodedPrompt:
  """Tokenizes a chat prompt and counts the tokens that start inside each block's text.

  Each block must occur exactly once in the rendered text. Needs a fast tokenizer (offsets).
  """
  text = render_chat(tokenizer, messages)
  if not blocks:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return EncodedPrompt(tuple(int(i) for i in ids), {})
  enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  ids, offsets = enc["input_ids"], enc["offset_mapping"]
  counts = {}
  for name, block in blocks.items():
    start = text.find(block)
    if start < 0 or text.find(block, start + 1) >= 0:
      where = "not found" if start < 0 else "found more than once"
      raise PromptBlockError(f"the {name} block was {where} in the rendered chat text; the chat "
                             "template must pass message contents through unchanged.")
    end = start + len(block)
    counts[name] = sum(1 for s, e in offsets if e > s and start <= s < end)
  return EncodedPrompt(tuple(int(i) for i in ids), counts)


def count_text_tokens(tokenizer, text: str) -> int:
  """Tokens of plain text (no chat template, no special tokens): a document's length."""
  return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_chat_tokens(tokenizer, messages: Sequence[dict]) -> int:
  """Tokens of a whole rendered conversation (no generation prompt): a record's length."""
  text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False,
                                       enable_thinking=False)
  return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclasses.dataclass
class TokenLedger:
  """Per-step token counts of one episode: prefill, decode and each block's share."""
  prefill: list[int] = dataclasses.field(default_factory=list)
  decode: list[int] = dataclasses.field(default_factory=list)
  blocks: dict[str, list[int]] = dataclasses.field(default_factory=dict)

  def add(self, prompt: EncodedPrompt, decoded: int) -> None:
    """Records one step: the prompt sent and the number of generated ids (stop id excluded)."""
    step = len(self.prefill)
    self.prefill.append(prompt.prefill)
    self.decode.append(int(decoded))
    for name in set(self.blocks) | set(prompt.block_tokens):
      self.blocks.setdefault(name, [0] * step).append(int(prompt.block_tokens.get(name, 0)))

  def to_json(self) -> dict:
    return {"prefill": list(self.prefill), "decode": list(self.decode),
            **{name: list(v) for name, v in sorted(self.blocks.items())}}


def totals(records: Sequence[dict]) -> dict[str, float]:
  """Steps and token totals over episode records (their 'tokens' field), plus per-step means."""
  steps = sum(len(r["tokens"]["prefill"]) for r in records)
  out = {"episodes": len(records), "steps": steps}
  names = sorted({k for r in records for k in r["tokens"]})
  for name in names:
    total = sum(sum(r["tokens"].get(name, [])) for r in records)
    out[f"{name}_tokens"] = total
    out[f"{name}_per_step"] = total / steps if steps else 0.0
  return out
