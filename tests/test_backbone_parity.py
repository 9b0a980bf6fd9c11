"""Logits parity against transformers on tiny random Qwen3 / Llama checkpoints (fp32)."""

import numpy as np
import pytest
import torch

import lskill_jax as lsj
from conftest import save_tiny_model

TOL = 1e-4

CASES = {
    # head_dim != hidden / heads, untied, non-default theta and eps
    "qwen3_headdim24_untied": ("qwen3", dict(head_dim=24, rms_norm_eps=1e-5)),
    "qwen3_tied_mqa": ("qwen3", dict(tie_word_embeddings=True, num_key_value_heads=1,
                                     rms_norm_eps=3e-6,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "llama_tied": ("llama", dict(tie_word_embeddings=True, rms_norm_eps=1e-6)),
    "llama_untied_headdim32": ("llama", dict(head_dim=32, num_key_value_heads=4,
                                             rope_parameters={"rope_type": "default",
                                                              "rope_theta": 123456.0})),
    "llama3_rope_scaling": ("llama", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
  arch, overrides = CASES[request.param]
  path = tmp_path_factory.mktemp(request.param)
  ref = save_tiny_model(path, arch, **overrides)
  return ref, lsj.load_backbone(str(path))


def _torch_logits(model, tokens, mask=None, positions=None):
  kw = {}
  if mask is not None:
    kw["attention_mask"] = torch.tensor(mask)
  if positions is not None:
    kw["position_ids"] = torch.tensor(positions)
  with torch.no_grad():
    return model(torch.tensor(tokens), **kw).logits.numpy()


def test_plain_batch(pair, rng):
  ref, bb = pair
  tokens = rng.randint(0, bb.config.vocab_size, (3, 37))
  ours = np.asarray(lsj.forward(bb, tokens))
  assert ours.dtype == np.float32 and ours.shape == (3, 37, bb.config.vocab_size)
  np.testing.assert_allclose(ours, _torch_logits(ref, tokens), atol=TOL, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch(pair, rng, side):
  ref, bb = pair
  lengths = [29, 12, 1]
  T = 29
  tokens = np.zeros((3, T), np.int64)
  mask = np.zeros((3, T), np.int64)
  for i, n in enumerate(lengths):
    sl = slice(T - n, T) if side == "left" else slice(0, n)
    tokens[i, sl] = rng.randint(0, bb.config.vocab_size, n)
    mask[i, sl] = 1
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  ours = np.asarray(lsj.forward(bb, tokens, attention_mask=mask))
  theirs = _torch_logits(ref, tokens, mask, positions)
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=TOL, rtol=0)


def test_packed_batch_matches_separate_sequences(pair, rng):
  """Each packed segment gets exactly the logits transformers gives it alone."""
  ref, bb = pair
  rows = [[13, 7, 20], [40], [5, 9, 11, 4]]  # segment lengths per row (last row ends padded)
  T = 40
  tokens = np.zeros((3, T), np.int64)
  seg = np.zeros((3, T), np.int32)
  for r, lens in enumerate(rows):
    start = 0
    for s, n in enumerate(lens):
      tokens[r, start:start + n] = rng.randint(0, bb.config.vocab_size, n)
      seg[r, start:start + n] = s + 1
      start += n
  ours = np.asarray(lsj.forward(bb, tokens, segment_ids=seg))
  for r, lens in enumerate(rows):
    start = 0
    for n in lens:
      alone = _torch_logits(ref, tokens[r:r + 1, start:start + n])[0]
      np.testing.assert_allclose(ours[r, start:start + n], alone, atol=TOL, rtol=0)
      start += n


def test_long_padded_packed_rows_cross_the_causal_blocks(pair, rng):
  """Rows longer than the causal-attention block, one left-padded and one packed, so every
  block boundary of `attend_causal` (and a ragged last block) is checked against
  transformers."""
  from lskill_jax.backbone import model
  ref, bb = pair
  T = 2 * model.CAUSAL_BLOCK + 37
  pad = 45
  tokens = rng.randint(0, bb.config.vocab_size, (2, T))
  seg = np.ones((2, T), np.int32)
  seg[0, :pad] = 0
  tokens[0, :pad] = 0
  cut = model.CAUSAL_BLOCK + 11  # a segment boundary inside a block
  seg[1, cut:] = 2
  ours = np.asarray(lsj.forward(bb, tokens, segment_ids=seg))
  np.testing.assert_allclose(ours[0, pad:], _torch_logits(ref, tokens[:1, pad:])[0],
                             atol=TOL, rtol=0)
  for start, stop in ((0, cut), (cut, T)):
    np.testing.assert_allclose(ours[1, start:stop],
                               _torch_logits(ref, tokens[1:, start:stop])[0], atol=TOL, rtol=0)


def test_bfloat16_runs_close(pair, rng):
  ref, bb = pair
  bb16 = lsj.load_backbone(bb.source, dtype="bfloat16")
  assert bb16.params["layers"]["q"].dtype == np.dtype("bfloat16")
  tokens = rng.randint(0, bb.config.vocab_size, (2, 16))
  ours = np.asarray(lsj.forward(bb16, tokens))
  assert ours.dtype == np.float32
  theirs = _torch_logits(ref, tokens)
  # bf16 weights: agreement of the argmax on most positions, small absolute error.
  assert np.abs(ours - theirs).max() < 0.05
  assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.9


def test_sharded_checkpoint_with_index(tmp_path, rng):
  ref = save_tiny_model(tmp_path, "llama", max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  bb = lsj.load_backbone(str(tmp_path))
  tokens = rng.randint(0, bb.config.vocab_size, (2, 9))
  np.testing.assert_allclose(np.asarray(lsj.forward(bb, tokens)), _torch_logits(ref, tokens),
                             atol=TOL, rtol=0)
