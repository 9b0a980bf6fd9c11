"""Bad input, changed configs and kills: each is refused with a clear error, and nothing is lost."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lskill_jax as lsj
from configs import stage1_tiny, tiny
from lskill_jax.compiler.cache import AdapterCache, backbone_id
from lskill_jax.compiler.documents import find_skill_files, read_skill
from lskill_jax.data import records
from lskill_jax.inference import PromptTooLongError
from lskill_jax.training import optimizer as optim
from lskill_jax.training import trainer
from lskill_jax.training.trainer import NonFiniteLossError, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps=2, **train_overrides):
  c = stage1_tiny.get_config()
  c.train.update(steps=steps, batch_size=2, accum=1, log_every=1, eval_every=0, save_every=2,
                 eval_docs=4, eval_batch_size=2, async_checkpointing=False)
  c.train.update(**train_overrides)
  return c


def _files(workdir, names=("config.json", "compiler.json")):
  return {n: (workdir / n).read_bytes() for n in names}


def _saved_steps(workdir):
  return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


def _leaves_equal(x, y):
  for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- adapter files


@pytest.fixture(scope="module")
def tiny_bb():
  return lsj.backbone_from_config(tiny.get_config())


def _random_adapter(cfg, rank=2, seed=0):
  rng = np.random.RandomState(seed)
  shapes = cfg.projection_shapes()
  return lsj.Adapter.from_factors(
      {t: 0.2 * rng.randn(cfg.num_layers, shapes[t][0], rank).astype(np.float32) for t in shapes},
      {t: 0.2 * rng.randn(cfg.num_layers, rank, shapes[t][1]).astype(np.float32) for t in shapes},
      0.5, base_fingerprint=lsj.adapter.base_fingerprint(cfg))


def _edit_json(path, fn):
  blob = json.loads(path.read_text())
  path.write_text(json.dumps(fn(blob)))


def _set(**kv):
  return lambda blob: {**blob, **kv}


def _retype_q_a(path):
  from lskill_jax.checkpoint.safetensors_file import SafetensorsFile, save_file
  tensors = {k: np.array(v) for k, v in SafetensorsFile(str(path / "adapter.safetensors")).items()}
  tensors["q.a"] = tensors["q.a"].astype(np.int32)
  save_file(tensors, str(path / "adapter.safetensors"))


@pytest.mark.parametrize("corrupt, match", [
    (lambda p: (p / "adapter.json").write_text("[1, 2]"), "expected a JSON object"),
    (lambda p: _edit_json(p / "adapter.json", _set(scale="abc")), "scale must be a finite number"),
    (lambda p: _edit_json(p / "adapter.json", _set(scale=float("nan"))), "scale must be a finite"),
    (lambda p: _edit_json(p / "adapter.json", _set(scale=1e30)), "magnitude at most"),
    (lambda p: _edit_json(p / "adapter.json", _set(rank="2")), "rank must be a positive integer"),
    (lambda p: _edit_json(p / "adapter.json", _set(num_layers=-1)), "num_layers must be a positive"),
    (lambda p: _edit_json(p / "adapter.json", _set(targets="qkv")), "non-empty list of distinct"),
    (lambda p: _edit_json(p / "adapter.json", _set(targets=["q", "q"])), "non-empty list of distinct"),
    (lambda p: _edit_json(p / "adapter.json", _set(metadata=["x"])), "metadata must be a JSON object"),
    (lambda p: _edit_json(p / "adapter.json", _set(metadata=None)), "metadata must be a JSON object"),
    (_retype_q_a, "dtype int32"),
])
def test_malformed_adapter_json_and_tensors_are_refused(tiny_bb, tmp_path, corrupt, match):
  _random_adapter(tiny_bb.config).save(str(tmp_path / "ad"))
  corrupt(tmp_path / "ad")
  with pytest.raises(lsj.AdapterFileError, match=match):
    lsj.Adapter.load(str(tmp_path / "ad"), backbone=tiny_bb)


def test_adapter_metadata_may_use_any_key(tiny_bb, tmp_path):
  ad = _random_adapter(tiny_bb.config)
  ad.save(str(tmp_path / "ad"))
  _edit_json(tmp_path / "ad" / "adapter.json", lambda b: {**b, "metadata": {**b["metadata"], "scale": "x", "a": 1}})
  back = lsj.Adapter.load(str(tmp_path / "ad"), backbone=tiny_bb)
  assert back.scale == ad.scale and back.metadata["scale"] == "x"


def test_negative_safetensors_offsets_are_refused(tmp_path):
  import struct
  from lskill_jax.checkpoint.safetensors_file import CorruptFileError, SafetensorsFile
  header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}).encode()
  (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
  with pytest.raises(CorruptFileError, match="0 <= begin <= end"):
    SafetensorsFile(str(tmp_path / "t.safetensors"))


@pytest.fixture
def peft_dir(tiny_bb, tmp_path):
  _random_adapter(tiny_bb.config).export_peft(str(tmp_path / "peft"), backbone=tiny_bb)
  return tmp_path / "peft"


@pytest.mark.parametrize("edit, match", [
    (lambda c: {k: v for k, v in c.items() if k != "r"}, "r must be a positive integer"),
    (lambda c: {k: v for k, v in c.items() if k != "lora_alpha"}, "lora_alpha must be a finite"),
    (lambda c: {**c, "r": 0}, "r must be a positive integer"),
    (lambda c: {**c, "lora_alpha": "sixteen"}, "lora_alpha must be a finite"),
    (lambda c: {**c, "lora_alpha": float("inf")}, "lora_alpha must be a finite"),
    (lambda c: [c], "expected a JSON object"),
])
def test_malformed_peft_configs_are_refused(tiny_bb, peft_dir, edit, match):
  _edit_json(peft_dir / "adapter_config.json", edit)
  with pytest.raises(lsj.AdapterFileError, match=match):
    lsj.Adapter.from_peft(str(peft_dir), backbone=tiny_bb)


def test_peft_layer_with_one_factor_is_refused(tiny_bb, peft_dir):
  from lskill_jax.checkpoint.safetensors_file import SafetensorsFile, save_file
  path = str(peft_dir / "adapter_model.safetensors")
  tensors = {k: np.array(v) for k, v in SafetensorsFile(path).items()}
  del tensors["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
  save_file(tensors, path)
  with pytest.raises(lsj.AdapterFileError, match=r"mlp.up_proj of layers \[1\] has lora_A or lora_B"):
    lsj.Adapter.from_peft(str(peft_dir), backbone=tiny_bb)


# ----------------------------------------------------------------------------- compiling


def test_adapter_cache_keys_on_the_over_length_treatment(tiny_bb, tmp_path):
  comp = lsj.SkillCompiler.create(tiny_bb, tiny.get_config(), seed=0)
  cache = AdapterCache(str(tmp_path / "cache"), comp)
  long_doc = "word " * 400  # over the tiny context
  n_chunks = -(-len(comp.tokenize(long_doc)) // comp.spec.context_len)
  truncated, = cache.get([long_doc], overlong="truncate")
  chunked, = cache.get([long_doc], overlong="chunk")
  assert truncated.rank == comp.spec.rank and chunked.rank == comp.spec.rank * n_chunks
  assert "chunks" in chunked.metadata["treatment"]
  with pytest.raises(lsj.DocumentError, match="over the compiler's context"):
    cache.get([long_doc])
  # A document within the context compiles the same whatever the treatment: one entry serves all.
  cache.get(["Open the fridge first."], overlong="chunk")
  comp.compile_documents = lambda *a, **k: pytest.fail("a hit must not compile")
  cache.get(["Open the fridge first."])
  # Other weights of the same architecture compile other adapters: another cache folder.
  other = lsj.backbone_from_config(tiny.get_config(), seed=1)
  assert backbone_id(other) != backbone_id(tiny_bb)


def test_unreadable_skill_files_are_document_errors(tmp_path):
  os.symlink(tmp_path / "missing.md", tmp_path / "dangling.md")
  os.symlink(tmp_path / "loop.md", tmp_path / "loop.md")
  (tmp_path / "ok.md").write_text("Look under the lamp.")
  files = find_skill_files(str(tmp_path))
  assert [os.path.basename(f) for f in files] == ["dangling.md", "loop.md", "ok.md"]
  for f, match in zip(files[:2], ("No such file", "symbolic links")):
    with pytest.raises(lsj.DocumentError, match=f"{f}: cannot be read .*{match}"):
      read_skill(f)


# ----------------------------------------------------------------------------- data, generation


def test_non_utf8_training_line_is_named(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "also fine"}\n')
  with pytest.raises(records.DataError, match=r"train.jsonl:2: not UTF-8 \(byte 0xe9"):
    records.read_pretrain_jsonl(str(path))
  texts, report = records.read_pretrain_jsonl(str(path), on_error="skip")
  assert texts == ["fine", "also fine"] and "not UTF-8" in report.summary()
  (tmp_path / "ift.json").write_bytes(b'[\n{"context": "caf\xe9"}\n]')
  with pytest.raises(records.DataError, match=r"ift.json:2: not UTF-8"):
    records.read_ift_json(str(tmp_path / "ift.json"))


def test_generation_refuses_no_new_tokens_and_over_long_prompts():
  c = tiny.get_config()
  c.backbone_shape["max_position_embeddings"] = 64
  bb = lsj.backbone_from_config(c)
  for n in (0, -3):
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
      lsj.generate_ids(bb, [[1, 2, 3]], max_new_tokens=n)
  with pytest.raises(PromptTooLongError, match="a prompt of 65 tokens is longer than this model's 64"):
    lsj.generate_ids(bb, [[1, 2], [5] * 65], max_new_tokens=4)
