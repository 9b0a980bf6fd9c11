"""Interop with the LatentSkill authors' compiler checkpoints (compiler.latentskill_io).

tests/fixtures/latentskill_tiny/ was written once by the authors' own code: a random tiny
Qwen3 (`backbone/`, saved by transformers), their checkpoint of a compiler with every tensor
random (`checkpoint/`, their saving function; generator heads 2 vs the backbone's 4, FFN 3W,
slot axis first), the config it was built from, and `expected.npz`: their adapters (factors
carrying √scale) for two token sequences and their logits with the first adapter mounted.
"""

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import yaml

import lskill_jax as lsj
from lskill_jax.backbone.config import from_hf_config
from lskill_jax.compiler import hypernet
from lskill_jax.compiler import latentskill_io as lio
from lskill_jax.compiler.skill_compiler import spec_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "latentskill_tiny")
TINY = dict(model_type="qwen3", vocab_size=128, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=256,
            rope_theta=10000.0)
SPEC = dict(rank=2, scale=0.05, metalora_rank=3, generator_depth=3, generator_heads=8,
            generator_ffn_mult=3, layer_axis_first=False, remat=False)


class NotATensor:
  """An object plain pickle would rebuild (and weights_only loading must not)."""


def tiny_config(**overrides):
  return from_hf_config({**TINY, **overrides})


def shell(cfg):
  """A backbone without weights: converting needs its config only."""
  return lsj.Backbone(config=cfg, params={})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(our compiler with every param random, the directory it exported to)."""
  spec = spec_from_config(SPEC, tiny_config())
  rng = np.random.RandomState(0)
  abstract = jax.eval_shape(lambda: hypernet.init(jax.random.key(0), spec))
  params = jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape).astype(np.float32), abstract)
  comp = lsj.SkillCompiler(shell(tiny_config()), spec, params)
  out = str(tmp_path_factory.mktemp("export") / "ckpt")
  comp.export_latentskill(out, global_step=7)
  return comp, out


def their_config(out):
  with open(os.path.join(out, lio.CONFIG_FILE)) as f:
    return yaml.safe_load(f)


def products(a, b, scale=1.0):
  """scale · A @ B per layer: [L, d_in, r] x [L, r, d_out] -> [L, d_in, d_out]."""
  return scale * np.einsum("lir,lro->lio", np.asarray(a), np.asarray(b))


def test_fixture_imports_to_their_adapters_and_logits():
  bb = lsj.load_backbone(os.path.join(FIXTURE, "backbone"))
  comp = lsj.SkillCompiler.from_latentskill(os.path.join(FIXTURE, "checkpoint"), bb,
                                            os.path.join(FIXTURE, "latentskill_config.yaml"))
  assert (comp.spec.generator_heads, comp.spec.generator_ffn_mult, comp.spec.layer_axis_first) == (2, 3, False)
  exp = np.load(os.path.join(FIXTURE, "expected.npz"))
  docs = [exp["doc0"], exp["doc1"]]
  # Both documents in one left-padded batch: padding must not change either adapter.
  T = max(len(d) for d in docs)
  tokens, mask = np.zeros((2, T), np.int32), np.zeros((2, T), np.int32)
  for i, d in enumerate(docs):
    tokens[i, T - len(d):], mask[i, T - len(d):] = d, 1
  stacked = comp.compile_tokens(tokens, mask)
  for j in range(2):
    ad = stacked.row(j)
    for t in lsj.adapter.adapter.TARGETS:
      ours = products(ad.a[t], ad.b[t], ad.scale)
      theirs = products(exp[f"doc{j}/{t}/A"], exp[f"doc{j}/{t}/B"])  # factors carry √scale
      assert np.linalg.norm(ours - theirs) <= 1e-5 * np.linalg.norm(theirs), (j, t)
  logits = np.asarray(lsj.forward(bb, exp["prompt"][None].astype(np.int32), adapter=stacked.row(0)))[0]
  np.testing.assert_allclose(logits, exp["logits_doc0"], atol=1e-4)


def test_export_writes_their_files_keys_and_types(exported):
  comp, out = exported
  assert sorted(os.listdir(out)) == sorted([lio.GENERATOR_FILE, lio.METALORA_FILE, lio.MEMORY_FILE,
                                            lio.STATE_FILE, lio.CONFIG_FILE])
  load = lambda name: torch.load(os.path.join(out, name), weights_only=True)
  mem = load(lio.MEMORY_FILE)
  assert isinstance(mem, torch.nn.Parameter) and tuple(mem.shape) == (comp.spec.geometry.memory_tokens, 32)
  sd = load(lio.GENERATOR_FILE)
  assert list(sd)[:3] == ["layer_pe", "token_pe", "transformer_layers.0.self_attn.in_proj_weight"]
  assert tuple(sd["transformer_layers.2.linear1.weight"].shape) == (96, 32)  # [out, in]
  assert all(v.dtype == torch.float32 for v in sd.values())
  meta = load(lio.METALORA_FILE)
  assert sorted(meta) == [0, 1] and set(meta[0]) == {"attention", "mlp"}
  leaf = meta[1]["mlp"]["down"]
  assert tuple(leaf["A"].shape) == (1, 64, 3) and tuple(leaf["B"].shape) == (1, 3, 32) and leaf["C"] is None
  with open(os.path.join(out, lio.STATE_FILE)) as f:
    assert json.load(f) == {"global_step": 7}
  cfg = their_config(out)
  enc = cfg["hypernetwork"]["transformer_cfg"]["encoder_cfg"]
  assert (enc["d_model"], enc["nhead"], enc["dim_feedforward"]) == (32, 8, 96)
  assert cfg["optim"]["adapter_reg"] == 0.0 and cfg["num_mem_token"] == comp.spec.geometry.memory_tokens


def test_export_then_import_is_exact(exported):
  comp, out = exported
  back = lsj.SkillCompiler.from_latentskill(out, comp.backbone, their_config(out))
  same = lambda s: {k: v for k, v in vars(s).items() if k not in ("remat", "metalora_init", "context_len")}
  assert same(back.spec) == same(comp.spec)
  assert jax.tree.structure(back.params) == jax.tree.structure(comp.params)
  for x, y in zip(jax.tree.leaves(back.params), jax.tree.leaves(comp.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("path, value, field", [
    ("hypernetwork.type", "linear", "hypernetwork.type"),
    ("hypernetwork.method", "rr", "hypernetwork.method"),
    ("hypernetwork.transformer_cfg.mean_pool_size", 2, "mean_pool_size"),
    ("hypernetwork.transformer_cfg.couple_num_layers", 1, "couple_num_layers"),
    ("hypernetwork.transformer_cfg.encoder_cfg.d_model", 64, "encoder_cfg.d_model"),
    ("hypernetwork.transformer_cfg.encoder_cfg.dim_feedforward", 80, "dim_feedforward"),
    ("hypernetwork.transformer_cfg.encoder_cfg.activation", "relu", "activation"),
    ("hypernetwork.transformer_cfg.encoder_cfg.layer_norm_eps", 1e-6, "layer_norm_eps"),
    ("hypernetwork.transformer_cfg.encoder_cfg.norm_first", True, "norm_first"),
    ("model.lora_r", "${lora_r}", "model.lora_r"),
    ("hypernetwork.transformer_cfg.scale", None, "transformer_cfg.scale"),
])
def test_import_refuses_config_it_cannot_represent(exported, path, value, field):
  comp, out = exported
  cfg = copy.deepcopy(their_config(out))
  *parents, last = path.split(".")
  node = cfg
  for p in parents:
    node = node[p]
  if value is None:
    del node[last]
  else:
    node[last] = value
  with pytest.raises(lio.LatentSkillFormatError, match=field.replace(".", r"\.")):
    lsj.SkillCompiler.from_latentskill(out, comp.backbone, cfg)


def test_import_refuses_files_it_cannot_represent(exported, tmp_path):
  comp, out = exported
  cfg = their_config(out)
  ift = tmp_path / "ift"
  shutil.copytree(out, ift)
  torch.save({}, str(ift / lio.IFT_FILE))
  with pytest.raises(lio.LatentSkillFormatError, match=lio.IFT_FILE):
    lsj.SkillCompiler.from_latentskill(str(ift), comp.backbone, cfg)
  # Shapes that do not fit the backbone given (another FFN size, another layer count).
  for other in (tiny_config(intermediate_size=96), tiny_config(num_hidden_layers=3)):
    with pytest.raises(lio.LatentSkillFormatError, match="another backbone|this backbone needs"):
      lsj.SkillCompiler.from_latentskill(out, shell(other), cfg)
  with pytest.raises(lio.LatentSkillFormatError, match="Qwen3 backbone"):
    lsj.SkillCompiler.from_latentskill(out, shell(tiny_config(model_type="llama")), cfg)
  # A file that only plain pickle could read is refused, not executed.
  bad = tmp_path / "pickled"
  shutil.copytree(out, bad)
  torch.save(NotATensor(), str(bad / lio.MEMORY_FILE))
  with pytest.raises(lio.LatentSkillFormatError, match="weights_only=True"):
    lsj.SkillCompiler.from_latentskill(str(bad), comp.backbone, cfg)


@pytest.mark.parametrize("overrides, backbone, field", [
    (dict(state_norm="layernorm"), {}, "state_norm"),
    (dict(generator_width=16), {}, "generator_width"),
    (dict(targets=("o", "down")), {}, "targets"),
    ({}, dict(intermediate_size=40), "rank"),   # P = 880 numbers per layer, not a multiple of 32
    ({}, dict(model_type="llama"), "Qwen3"),
])
def test_export_refuses_what_their_code_cannot_run(overrides, backbone, field):
  spec = hypernet.CompilerSpec(backbone=tiny_config(**backbone),
                               **{**SPEC, "targets": lsj.adapter.adapter.TARGETS, **overrides})
  with pytest.raises(lio.LatentSkillFormatError, match=field):
    lio.config_from_spec(spec)


def test_a_refused_export_writes_nothing(exported, tmp_path):
  ours, _ = exported
  spec = dataclasses.replace(ours.spec, state_norm="layernorm")  # same params tree as "none"
  comp = lsj.SkillCompiler(ours.backbone, spec, ours.params)
  with pytest.raises(lio.LatentSkillFormatError, match="state_norm"):
    comp.export_latentskill(str(tmp_path / "out"))
  assert os.listdir(tmp_path) == []


def test_launch_convert_imports_and_reports_refusals_in_one_line(tmp_path):
  run = lambda *args: subprocess.run([sys.executable, "-m", "launch.convert", *args],
                                     capture_output=True, text=True, cwd=ROOT, timeout=600)
  model = f"--model={os.path.join(FIXTURE, 'backbone')}"
  config = f"--latentskill_config={os.path.join(FIXTURE, 'latentskill_config.yaml')}"
  proc = run(f"--from_latentskill={os.path.join(FIXTURE, 'checkpoint')}", config, model,
             f"--out={tmp_path / 'ours'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  bb = lsj.load_backbone(os.path.join(FIXTURE, "backbone"))
  loaded = lsj.SkillCompiler.load(str(tmp_path / "ours"), bb)
  direct = lsj.SkillCompiler.from_latentskill(os.path.join(FIXTURE, "checkpoint"), bb,
                                              os.path.join(FIXTURE, "latentskill_config.yaml"))
  for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(direct.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  proc = run(f"--from_latentskill={os.path.join(FIXTURE, 'backbone')}", config, model,
             f"--out={tmp_path / 'bad'}")
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and lio.GENERATOR_FILE in last
  assert not (tmp_path / "bad").exists()


def test_config_numbers_are_read_as_their_code_reads_them(exported):
  comp, out = exported
  cfg = their_config(out)
  cfg["hypernetwork"]["transformer_cfg"]["scale"] = "1e-3"   # YAML 1.1 leaves this a string
  back = lsj.SkillCompiler.from_latentskill(out, comp.backbone, cfg)
  assert back.spec.scale == 1e-3
