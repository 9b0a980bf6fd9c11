"""The public inference entry points: `forward` and `generate` on a loaded Backbone.

These are thin host-side wrappers: they validate inputs, tokenize, place arrays with their
shardings on the backbone's mesh, and call the module-level jitted `forward_logits` /
`generate_tokens` under that mesh (compiled once per shape and kept); those constrain their
outputs by logical axes.
"""

from __future__ import annotations

import functools
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax.backbone import generation, model
from lskill_jax.backbone.loading import Backbone
from lskill_jax import sharding as shd

_PROMPT_BUCKET = 32


class TokenRangeError(ValueError):
  """Token ids outside [0, vocab_size)."""


class PromptError(ValueError):
  """A prompt the model cannot take: empty, or too long."""


class PromptTooLongError(PromptError):
  """A prompt longer than the model's position range (max_position_embeddings)."""


def check_tokens(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"tokens must be an integer array [batch, time]; got {tokens.dtype}{list(tokens.shape)}.")
  if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    bad = tokens[(tokens < 0) | (tokens >= vocab_size)]
    raise TokenRangeError(
        f"token ids must lie in [0, {vocab_size}) for this model; found {bad[:5].tolist()}. "
        "Was the text tokenized with another model's tokenizer?")
  return tokens.astype(np.int32)


def _lora_args(bb: Backbone, adapter, alpha):
  if adapter is None:
    return None, jnp.float32(0.0)
  return adapter.mount(bb, alpha)


@functools.partial(jax.jit, static_argnames=("cfg", "remat", "replicate"))
def forward_logits(params, tokens, segment_ids, positions, lora, lora_coef, *, cfg, remat,
                   replicate=False):
  """`model.forward`, jitted; logits sharded (batch, act_seq, act_vocab), or whole on every
  device when `replicate` (a mesh over several processes, each reading them on its host)."""
  logits = model.forward(params, cfg, tokens, segment_ids=segment_ids, positions=positions,
                         lora=lora, lora_coef=lora_coef, remat=remat)
  return shd.constrain_outputs(logits, ("batch", "act_seq", "act_vocab"), replicate)


def forward(bb: Backbone, tokens, *, segment_ids=None, positions=None, attention_mask=None,
            adapter=None, alpha: float = 1.0, remat: bool = False) -> jax.Array:
  """Logits float32 [B, T, V] for token ids int32 [B, T].

  attention_mask [B, T] (1 = token, 0 = padding) or segment_ids [B, T] (packed sequences,
  0 = padding) restrict attention; positions default to the index inside each segment.
  `adapter` (an `lsj.Adapter`) is mounted unmerged with coefficient `alpha`.
  """
  cfg = bb.config
  tokens = check_tokens(tokens, cfg.vocab_size)
  if segment_ids is None:
    segment_ids = np.ones(tokens.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
  segment_ids = np.asarray(segment_ids, np.int32)
  if segment_ids.shape != tokens.shape:
    raise ValueError(f"segment_ids/attention_mask shape {segment_ids.shape} != tokens shape {tokens.shape}")
  if positions is None:
    positions = model.segment_positions(jnp.asarray(segment_ids))
  mesh = shd.mesh_or_default(bb.mesh)
  lora, coef = _lora_args(bb, adapter, alpha)
  seq = ("batch", "act_seq")
  with jax.set_mesh(mesh):
    return forward_logits(
        bb.params, shd.put(tokens, mesh, seq), shd.put(segment_ids, mesh, seq),
        shd.put(np.asarray(positions, np.int32), mesh, seq), lora,
        shd.put(coef, mesh, (None,) * np.ndim(coef)), cfg=cfg, remat=remat,
        replicate=mesh.is_multi_process)


# ----------------------------------------------------------------------------- generation


@functools.partial(jax.jit, static_argnames=(
    "cfg", "max_new_tokens", "stop_ids", "pad_id", "greedy", "replicate"))
def generate_tokens(params, prompt, mask, key_data, temperature, top_p, lora, lora_coef, *, cfg,
                    max_new_tokens, stop_ids, pad_id, greedy, replicate=False):
  """`generation.generate_tokens`, jitted: (new tokens [B, max_new_tokens], lengths [B]).

  The key travels as raw uint32 data, so that it is placed like any other array; outputs are
  sharded by batch, or whole on every device when `replicate` (as in `forward_logits`)."""
  out = generation.generate_tokens(
      params, cfg, prompt, mask, jax.random.wrap_key_data(key_data),
      max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id, greedy=greedy,
      temperature=temperature, top_p=top_p, lora=lora, lora_coef=lora_coef)
  return shd.constrain_outputs(out, (("batch", None), ("batch",)), replicate)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, bucket: int = _PROMPT_BUCKET):
  """Left-pads token lists to a common length rounded up to `bucket` (fewer recompiles)."""
  if not seqs or any(len(s) == 0 for s in seqs):
    raise PromptError("every prompt must have at least one token.")
  P = max(len(s) for s in seqs)
  P = -(-P // bucket) * bucket
  tokens = np.full((len(seqs), P), pad_id, np.int32)
  mask = np.zeros((len(seqs), P), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, P - len(s):] = s
    mask[i, P - len(s):] = 1
  return tokens, mask


def generate_ids(bb: Backbone, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 stop_ids: Sequence[int] | None = None, adapter=None, alpha: float = 1.0,
                 prompt_bucket: int = _PROMPT_BUCKET) -> list[list[int]]:
  """Generates from token-id prompts of any lengths; returns the new ids of each row (stop excluded).

  Prompts are left-padded to a multiple of `prompt_bucket` tokens: each padded length compiles
  once, so a coarser bucket trades padding for fewer compilations.
  """
  cfg = bb.config
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
      or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
  prompts = [list(p) for p in prompts]
  longest = max((len(p) for p in prompts), default=0)
  if longest > cfg.max_position_embeddings:
    raise PromptTooLongError(
        f"a prompt of {longest} tokens is longer than this model's {cfg.max_position_embeddings} "
        "positions (max_position_embeddings); shorten it.")
  if longest + max_new_tokens > cfg.max_position_embeddings:
    logging.warning("a prompt of %d tokens plus %d new tokens runs past this model's %d positions; "
                    "tokens beyond them are unreliable.", longest, max_new_tokens,
                    cfg.max_position_embeddings)
  pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
  tokens, mask = left_pad(prompts, pad_id, prompt_bucket)
  check_tokens(tokens, cfg.vocab_size)
  stop = tuple(sorted(set(stop_ids if stop_ids is not None else default_stop_ids(bb))))
  mesh = shd.mesh_or_default(bb.mesh)
  lora, coef = _lora_args(bb, adapter, alpha)
  with jax.set_mesh(mesh):
    out, lengths = generate_tokens(
        bb.params, shd.put(tokens, mesh, ("batch", None)), shd.put(mask, mesh, ("batch", None)),
        shd.put(jax.random.key_data(jax.random.key(seed)), mesh, (None,)),
        shd.put(np.float32(temperature), mesh, ()), shd.put(np.float32(top_p), mesh, ()),
        lora, shd.put(coef, mesh, (None,) * np.ndim(coef)), cfg=cfg,
        max_new_tokens=int(max_new_tokens), stop_ids=stop, pad_id=int(pad_id),
        greedy=temperature == 0.0, replicate=mesh.is_multi_process)
  out, lengths = np.asarray(out), np.asarray(lengths)
  return [out[i, :lengths[i]].tolist() for i in range(tokens.shape[0])]


def default_stop_ids(bb: Backbone) -> tuple[int, ...]:
  """End-of-sequence ids from the config and the tokenizer (chat models end turns with one)."""
  ids = set(bb.config.eos_token_ids)
  tok = bb.tokenizer
  if tok is not None:
    if tok.eos_token_id is not None:
      ids.add(int(tok.eos_token_id))
    for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
      tid = tok.convert_tokens_to_ids(t) if t in tok.get_vocab() else None
      if tid is not None:
        ids.add(int(tid))
  return tuple(sorted(ids))


def chat_prompt_ids(tokenizer, prompt: str | list[dict], system: str | None = None) -> list[int]:
  """Token ids of a chat prompt (a user string or a message list), generation prompt added,
  thinking disabled for templates that support it."""
  messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
  if system is not None:
    messages = [{"role": "system", "content": system}] + messages
  text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       enable_thinking=False)
  return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate(bb: Backbone, prompts: Sequence[str | list[dict]], *, max_new_tokens: int = 64,
             chat: bool = True, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stop_ids: Sequence[int] | None = None, adapter=None, alpha: float = 1.0,
             system: str | None = None) -> list[str]:
  """Answers a batch of prompts (chat template applied by default); greedy unless temperature > 0."""
  tok = bb.tokenizer
  if tok is None:
    raise ValueError("this backbone has no tokenizer; pass token ids to `generate_ids` instead, "
                     "or load a checkpoint that ships one.")
  if isinstance(prompts, str):
    prompts = [prompts]
  if chat:
    ids = [chat_prompt_ids(tok, p, system) for p in prompts]
  else:
    ids = [tok(p)["input_ids"] for p in prompts]
  new = generate_ids(bb, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p, seed=seed, stop_ids=stop_ids, adapter=adapter, alpha=alpha)
  return [tok.decode(n, skip_special_tokens=True) for n in new]
