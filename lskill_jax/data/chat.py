"""Chat rendering with a loss mask on assistant spans, for any tokenizer's chat template.

The conversation is rendered once with the tokenizer's own template (thinking disabled);
each assistant message is then located in the rendered text, and the supervised span runs
from the start of its content through the end-of-turn token that follows it, so the model
learns to stop. Template text around it (role headers, empty think blocks) is never a target.
"""

from __future__ import annotations

import numpy as np


def end_of_turn_text(tokenizer) -> str | None:
  for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
    if t in tokenizer.get_vocab():
      return t
  return tokenizer.eos_token


def render(tokenizer, messages: list[dict]) -> str:
  return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                       enable_thinking=False)


def tokenize_conversation(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
  """(token ids, loss weights) of a rendered conversation; weight 1 on assistant spans.

  weights[i] = 1 means token i is a target (predicted from tokens before it).
  """
  text = render(tokenizer, messages)
  eot = end_of_turn_text(tokenizer)
  spans = []
  cursor = 0
  for m in messages:
    content = m["content"].strip()
    if not content:
      continue
    pos = text.find(content, cursor)
    if pos < 0:
      raise ValueError("the chat template altered a message's content; cannot place its loss mask.")
    end = pos + len(content)
    if m["role"] == "assistant":
      if eot:
        e = text.find(eot, end)
        if e >= 0:
          end = e + len(eot)
      spans.append((pos, end))
    cursor = end
  enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  ids = enc["input_ids"]
  weights = np.zeros(len(ids), np.int32)
  for i, (s, e) in enumerate(enc["offset_mapping"]):
    if e > s and any(a <= s and e <= b for a, b in spans):
      weights[i] = 1
  return ids, weights.tolist()
