"""Stage-2 examples (trajectory-supervised fine-tuning): one skill, one adapter, every assistant turn."""

from __future__ import annotations

import numpy as np

from lskill_jax.data.chat import tokenize_conversation
from lskill_jax.data.stage1 import pack_arrays


def build_example(tokenizer, record: dict, context_len: int, seq_len: int) -> dict[str, np.ndarray]:
  """The record's context is the compiler's evidence; the conversation is supervised on all
  assistant turns with the adapter mounted (the context never appears in it)."""
  ev_ids = tokenizer(record["context"], add_special_tokens=False)["input_ids"][:context_len]
  ids, weights = tokenize_conversation(tokenizer, record["conversations"])
  return pack_arrays(ev_ids, ids, weights, context_len, seq_len, n_docs=1)
