"""Test set-up: 8 fake CPU devices (for sharding tests) and tiny transformers checkpoints."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Many tests build the same tiny programs (a training run and its resumed twin, one config in
# several files): a compilation cache shared by the workers compiles each once. Its keys hash
# the program, the flags and the JAX version, so a stale entry is never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))  # bytes; oldest evicted

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def tiny_hf_config(arch: str = "qwen3", **overrides):
  """A tiny transformers config (Qwen3Config or LlamaConfig)."""
  from transformers import LlamaConfig, Qwen3Config
  base = dict(vocab_size=307, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
              rms_norm_eps=1e-5, tie_word_embeddings=False)
  base.update(overrides)
  return (Qwen3Config if arch == "qwen3" else LlamaConfig)(**base)


def save_tiny_model(path, arch: str = "qwen3", seed: int = 0, max_shard_size=None, **overrides):
  """Writes a random transformers model to `path` (transformers' own save_pretrained)."""
  from transformers import LlamaForCausalLM, Qwen3ForCausalLM
  torch.manual_seed(seed)
  cfg = tiny_hf_config(arch, **overrides)
  model = (Qwen3ForCausalLM if arch == "qwen3" else LlamaForCausalLM)(cfg).eval()
  # Norm weights start at 1; perturb them so a mix-up of norms cannot go unnoticed.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(str(path), **kwargs)
  return model


@pytest.fixture
def rng():
  return np.random.RandomState(0)
