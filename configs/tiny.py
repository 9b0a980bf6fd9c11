"""A tiny random backbone and compiler for tests: compiles and trains in seconds on a CPU."""

from configs import qwen3_8b

# Qwen3-shaped, with a 1024-token byte-level BPE trained on the starter corpus (a real
# tokenizer with a chat template whose vocabulary keeps the LM head tiny).
TINY_QWEN3 = dict(
    model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=1024, hidden_size=64,
    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6}, hidden_act="silu",
    eos_token_id=151645)


def get_config():
  c = qwen3_8b.get_config()
  c.name = "tiny"
  c.model = "random"               # random weights with backbone_shape
  c.backbone_shape = TINY_QWEN3
  c.tokenizer_corpus = ("data/starter_corpus",)
  c.dtype = "float32"
  c.compiler.rank = 2
  c.compiler.metalora_rank = 4
  c.compiler.generator_depth = 2
  c.compiler.context_len = 128
  c.compiler.remat = False
  return c
