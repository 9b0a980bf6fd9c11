"""A small byte-level BPE tokenizer trained on the fly, with a ChatML chat template.

Tiny random backbones (tests, CPU smoke runs) need a real tokenizer whose vocabulary is as
small as the model's: a 150k-entry vocabulary would make the LM head dominate every step.
Training is deterministic for the same texts and size and takes about a second.
"""

from __future__ import annotations

import functools

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@functools.lru_cache(maxsize=4)
def _train(texts: tuple[str, ...], vocab_size: int):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(list(texts), trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                 pad_token="<|endoftext|>")
  fast.chat_template = CHATML_TEMPLATE
  return fast


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
  """A transformers fast tokenizer with at most `vocab_size` tokens (3 special, 256 bytes)."""
  if vocab_size < len(SPECIAL) + 256 + 1:
    raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE (need > 259).")
  return _train(tuple(texts), vocab_size)
