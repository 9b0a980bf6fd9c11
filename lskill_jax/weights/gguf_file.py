"""GGUF (llama.cpp) checkpoints: config, dequantized weights in HF layout, tokenizer."""

from __future__ import annotations

import os

import numpy as np

from lskill_jax.weights.hf_dir import TensorSource, UnsupportedConfigError

# llama.cpp name under `blk.{i}.` -> transformers module under `model.layers.{i}.`
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}


def _field(reader, key, default=None):
  f = reader.fields.get(key)
  if f is None:
    return default
  v = f.contents()
  return v


def _reader(path: str):
  import gguf  # imported lazily: only GGUF users need it
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the reader raises bare ValueErrors/IndexErrors on bad files
    raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}).") from None


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation ([out, in] rows interleaved per head) to HF order."""
  out = w.shape[0]
  return (w.reshape(n_heads, out // n_heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def read_config(path: str, reader=None) -> dict:
  """An HF-style config dict from the GGUF metadata."""
  r = reader or _reader(path)
  arch = _field(r, "general.architecture")
  if arch != "llama":
    raise UnsupportedConfigError(
        f"{path}: GGUF architecture {arch!r} is not supported (only 'llama', e.g. SmolLM2); "
        "load Qwen3 from a transformers directory instead.")
  tensor_names = {t.name for t in r.tensors}
  embd = next(t for t in r.tensors if t.name == "token_embd.weight")
  heads = int(_field(r, "llama.attention.head_count"))
  hidden = int(_field(r, "llama.embedding_length"))
  eos = _field(r, "tokenizer.ggml.eos_token_id")
  return {
      "model_type": "llama", "architectures": ["LlamaForCausalLM"],
      "vocab_size": int(embd.shape[1]), "hidden_size": hidden,
      "intermediate_size": int(_field(r, "llama.feed_forward_length")),
      "num_hidden_layers": int(_field(r, "llama.block_count")),
      "num_attention_heads": heads,
      "num_key_value_heads": int(_field(r, "llama.attention.head_count_kv", heads)),
      "head_dim": int(_field(r, "llama.rope.dimension_count", hidden // heads)),
      "rope_theta": float(_field(r, "llama.rope.freq_base", 10000.0)),
      "rms_norm_eps": float(_field(r, "llama.attention.layer_norm_rms_epsilon")),
      "max_position_embeddings": int(_field(r, "llama.context_length", 2048)),
      "tie_word_embeddings": "output.weight" not in tensor_names,
      "hidden_act": "silu",
      "bos_token_id": _field(r, "tokenizer.ggml.bos_token_id"),
      "eos_token_id": eos,
      "pad_token_id": _field(r, "tokenizer.ggml.padding_token_id"),
  }


def read_weights(path: str) -> tuple[dict, TensorSource]:
  """(HF-style config, dequantized fp32 tensors named and laid out as in transformers)."""
  import gguf
  r = _reader(path)
  cfg = read_config(path, r)
  arrays = {}
  for t in r.tensors:
    base, _, suffix = t.name.rpartition(".")
    if base.startswith("blk."):
      _, layer, name = base.split(".", 2)
      if name not in _LAYER_NAMES:
        raise UnsupportedConfigError(f"{path}: unexpected GGUF tensor {t.name}.")
      hf = f"model.layers.{layer}.{_LAYER_NAMES[name]}.{suffix}"
    elif base in _GLOBAL_NAMES:
      hf = f"{_GLOBAL_NAMES[base]}.{suffix}"
    else:
      continue  # e.g. rope_freqs: derived from the config instead
    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    if base.endswith("attn_q"):
      w = unpermute_rope_rows(w, cfg["num_attention_heads"])
    elif base.endswith("attn_k"):
      w = unpermute_rope_rows(w, cfg["num_key_value_heads"])
    arrays[hf] = w
  return cfg, TensorSource.from_arrays(arrays)


def load_tokenizer(path: str):
  """The tokenizer and chat template stored inside the GGUF, as a transformers tokenizer."""
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                       gguf_file=os.path.basename(path))
