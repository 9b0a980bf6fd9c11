"""Bad checkpoints and bad inputs are refused with messages that name the problem."""

import json
import os

import numpy as np
import pytest

import lskill_jax as lsj
from conftest import save_tiny_model
from lskill_jax.weights.safetensors_file import CorruptFileError


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("good")
  save_tiny_model(path, "qwen3")
  return path


def _copy_with_config(src, dst, **changes):
  os.makedirs(dst, exist_ok=True)
  cfg = json.loads((src / "config.json").read_text())
  for k, v in changes.items():
    if v is None:
      cfg.pop(k, None)
    else:
      cfg[k] = v
  (dst / "config.json").write_text(json.dumps(cfg))
  os.symlink(src / "model.safetensors", dst / "model.safetensors")
  return str(dst)


def test_missing_path():
  with pytest.raises(FileNotFoundError, match="no checkpoint at"):
    lsj.load_backbone("/nonexistent/model")


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"]), "unknown architecture"),
    (dict(model_type="qwen3_moe"), "unknown architecture"),
    (dict(num_experts=8, moe_intermediate_size=32), "mixture-of-experts"),
    (dict(use_sliding_window=True, sliding_window=64), "sliding-window"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}), "yarn"),
    (dict(rope_parameters=None, rope_theta=None), "rope_theta"),
    (dict(attention_bias=True), "bias"),
])
def test_unsupported_configs(good_dir, tmp_path, changes, match):
  path = _copy_with_config(good_dir, tmp_path / "bad", **changes)
  with pytest.raises(lsj.UnsupportedConfigError, match=match):
    lsj.load_backbone(path)


@pytest.mark.parametrize("changes, match", [
    (dict(intermediate_size=128), "has shape"),
    (dict(num_hidden_layers=2), "not part of"),
    (dict(num_hidden_layers=4), "missing"),
    (dict(head_dim=32), "has shape"),
    (dict(vocab_size=300), "has shape"),
])
def test_config_weight_mismatch(good_dir, tmp_path, changes, match):
  path = _copy_with_config(good_dir, tmp_path / "bad", **changes)
  with pytest.raises(lsj.WeightMismatchError, match=match):
    lsj.load_backbone(path)


def test_truncated_weights(good_dir, tmp_path):
  bad = tmp_path / "trunc"
  bad.mkdir()
  (bad / "config.json").write_text((good_dir / "config.json").read_text())
  data = (good_dir / "model.safetensors").read_bytes()
  (bad / "model.safetensors").write_bytes(data[:len(data) // 2])
  with pytest.raises(CorruptFileError, match="truncated"):
    lsj.load_backbone(str(bad))


def test_pickle_only_directory_is_refused(good_dir, tmp_path):
  bad = tmp_path / "pickle"
  bad.mkdir()
  (bad / "config.json").write_text((good_dir / "config.json").read_text())
  (bad / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(FileNotFoundError, match="pickle"):
    lsj.load_backbone(str(bad))


def test_token_ids_out_of_range(good_dir):
  bb = lsj.load_backbone(str(good_dir))
  with pytest.raises(lsj.TokenRangeError, match=r"\[0, 307\)"):
    lsj.forward(bb, np.array([[1, 2, 307]]))
  with pytest.raises(lsj.TokenRangeError):
    lsj.generate_ids(bb, [[-1, 3]], max_new_tokens=2)


def test_qwen3_without_tokenizer_gets_the_shipped_one_only_if_it_fits(good_dir, tmp_path):
  assert lsj.load_backbone(str(good_dir)).tokenizer is None  # vocab 307 < Qwen3 tokenizer
  big = tmp_path / "big"
  save_tiny_model(big, "qwen3", vocab_size=151936, hidden_size=32, intermediate_size=48,
                  num_hidden_layers=1, tie_word_embeddings=True)
  bb = lsj.load_backbone(str(big))
  assert bb.tokenizer is not None and len(bb.tokenizer) == 151669
  assert "<|im_start|>" in bb.tokenizer.apply_chat_template(
      [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
