"""Adapters: PEFT parity both ways, merged export, per-row mounting, arithmetic, file safety."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import lskill_jax as lsj
from conftest import save_tiny_model
from lskill_jax.weights.safetensors_file import SafetensorsFile, save_file

TOL = 1e-4
PEFT_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(cfg, rank=4, seed=0, scale=0.5, targets=None):
  rng = np.random.RandomState(seed)
  shapes = cfg.projection_shapes()
  targets = targets or list(shapes)
  L = cfg.num_layers
  return lsj.Adapter.from_factors(
      {t: 0.2 * rng.randn(L, shapes[t][0], rank).astype(np.float32) for t in targets},
      {t: 0.2 * rng.randn(L, rank, shapes[t][1]).astype(np.float32) for t in targets},
      scale, base_fingerprint=lsj.adapter.base_fingerprint(cfg))


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def model_pair(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  extra = {"head_dim": 24} if request.param == "qwen3" else {"tie_word_embeddings": True}
  torch_model = save_tiny_model(path, request.param, **extra)
  return torch_model, lsj.load_backbone(str(path)), path


def _peft_dir(torch_model, path, r=4, lora_alpha=7.0, rslora=False, seed=1):
  """A PEFT LoRA adapter with random non-zero A and B, saved by peft itself."""
  import copy
  from peft import LoraConfig, get_peft_model
  torch.manual_seed(seed)
  pm = get_peft_model(copy.deepcopy(torch_model), LoraConfig(
      r=r, lora_alpha=lora_alpha, target_modules=PEFT_MODULES, use_rslora=rslora,
      init_lora_weights=False))
  with torch.no_grad():
    for name, p in pm.named_parameters():
      if "lora_" in name:
        p.normal_(0, 0.2)
  pm.save_pretrained(str(path))
  return path


def _peft_logits(torch_model, adapter_dir, tokens):
  import copy
  from peft import PeftModel
  pm = PeftModel.from_pretrained(copy.deepcopy(torch_model), str(adapter_dir)).eval()
  with torch.no_grad():
    return pm(torch.tensor(tokens)).logits.numpy()


def _with_alpha(src, dst, alpha):
  """Copy of a PEFT dir whose lora_alpha is multiplied by α: torch's reference for mounting at α."""
  shutil.copytree(src, dst)
  cfg = json.loads((dst / "adapter_config.json").read_text())
  cfg["lora_alpha"] = cfg["lora_alpha"] * alpha
  (dst / "adapter_config.json").write_text(json.dumps(cfg))
  return dst


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_import_matches_torch_peft(model_pair, tmp_path, rslora):
  torch_model, bb, _ = model_pair
  src = _peft_dir(torch_model, tmp_path / "peft", r=4, lora_alpha=7.0, rslora=rslora)
  ad = lsj.Adapter.from_peft(str(src), backbone=bb)
  assert ad.rank == 4 and ad.targets == lsj.adapter.TARGETS
  tokens = np.random.RandomState(0).randint(0, bb.config.vocab_size, (2, 13))
  base = np.asarray(lsj.forward(bb, tokens))
  for alpha in (0.0, 0.5, 1.3):
    ours = np.asarray(lsj.forward(bb, tokens, adapter=ad, alpha=alpha))
    if alpha == 0.0:
      np.testing.assert_array_equal(ours, base)
      continue
    ref = _peft_logits(torch_model, _with_alpha(src, tmp_path / f"a{alpha}", alpha), tokens)
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    assert np.abs(ours - base).max() > 1e-2  # the adapter really changes the output


def test_export_peft_and_merged_hf_load_in_torch(model_pair, tmp_path):
  from transformers import AutoModelForCausalLM
  torch_model, bb, _ = model_pair
  ad = random_adapter(bb.config, rank=3, scale=0.8)
  tokens = np.random.RandomState(1).randint(0, bb.config.vocab_size, (2, 11))
  ours = np.asarray(lsj.forward(bb, tokens, adapter=ad, alpha=0.6))

  ad.export_peft(str(tmp_path / "peft"), backbone=bb, alpha=0.6)
  cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert cfg["lora_alpha"] == cfg["r"] == 3 and sorted(cfg["target_modules"]) == sorted(PEFT_MODULES)
  np.testing.assert_allclose(_peft_logits(torch_model, tmp_path / "peft", tokens), ours,
                             atol=TOL, rtol=0)

  lsj.export_hf(lsj.merge(bb, ad, alpha=0.6), str(tmp_path / "merged"))
  merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
  with torch.no_grad():
    np.testing.assert_allclose(merged(torch.tensor(tokens)).logits.numpy(), ours, atol=TOL, rtol=0)
  # And our own loader reads the merged checkpoint back.
  np.testing.assert_allclose(np.asarray(lsj.forward(lsj.load_backbone(str(tmp_path / "merged")), tokens)),
                             ours, atol=TOL, rtol=0)


def test_merged_equals_unmerged_in_generation(model_pair):
  _, bb, _ = model_pair
  ad = random_adapter(bb.config, seed=3)
  prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
  assert (lsj.generate_ids(bb, prompts, max_new_tokens=8, stop_ids=(), adapter=ad, alpha=0.7) ==
          lsj.generate_ids(lsj.merge(bb, ad, 0.7), prompts, max_new_tokens=8, stop_ids=()))


def test_per_row_adapters_match_each_row_alone(model_pair):
  _, bb, _ = model_pair
  ads = [random_adapter(bb.config, rank=r, seed=s, scale=sc)
         for r, s, sc in ((4, 0, 0.5), (2, 1, 1.5), (3, 2, 0.1))]
  stacked = lsj.Adapter.stack(ads)
  assert stacked.batched and stacked.batch_size == 3
  tokens = np.random.RandomState(2).randint(0, bb.config.vocab_size, (3, 9))
  both = np.asarray(lsj.forward(bb, tokens, adapter=stacked, alpha=0.9))
  for i, ad in enumerate(ads):
    alone = np.asarray(lsj.forward(bb, tokens[i:i + 1], adapter=ad, alpha=0.9))
    np.testing.assert_allclose(both[i:i + 1], alone, atol=1e-5, rtol=0)


def test_weighted_sum_difference_and_rank_reduction(model_pair):
  _, bb, _ = model_pair
  a1, a2 = random_adapter(bb.config, rank=4, seed=0, scale=0.5), random_adapter(bb.config, rank=2, seed=1, scale=2.0)
  s = lsj.weighted_sum([a1, a2], [0.7, -1.6])
  assert s.rank == 6
  for t in s.targets:
    for layer in range(bb.config.num_layers):
      want = 0.7 * a1.delta(t, layer) - 1.6 * a2.delta(t, layer)
      got = s.delta(t, layer)
      assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
  diff = a1 - a1
  assert all(np.abs(diff.delta(t, 0)).max() < 1e-6 for t in diff.targets)
  # Rank reduction: exact when the target rank holds the whole sum, and the reported error
  # is the true relative Frobenius error when it does not.
  exact, errs = s.reduce_rank(6)
  assert max(errs.values()) < 1e-6
  assert np.linalg.norm(exact.delta("q", 1) - s.delta("q", 1)) < 1e-5 * np.linalg.norm(s.delta("q", 1))
  low, errs = s.reduce_rank(4)
  assert low.rank == 4
  true = max(np.linalg.norm(low.delta("up", l) - s.delta("up", l)) / np.linalg.norm(s.delta("up", l))
             for l in range(bb.config.num_layers))
  assert 0 < errs["up"] and abs(errs["up"] - true) < 1e-5


def test_subsets_by_layer_and_target(model_pair):
  _, bb, _ = model_pair
  ad = random_adapter(bb.config)
  last = ad.subset(layers=slice(-1, None))
  assert np.all(np.asarray(last.a["q"][:-1]) == 0) and np.any(np.asarray(last.a["q"][-1]) != 0)
  od = ad.subset(targets=["o", "down"])
  assert od.targets == ("o", "down")
  tokens = np.random.RandomState(0).randint(0, bb.config.vocab_size, (1, 7))
  assert np.abs(np.asarray(lsj.forward(bb, tokens, adapter=od)) - np.asarray(lsj.forward(bb, tokens))).max() > 0


# ----------------------------------------------------------------------------- files


def test_save_load_roundtrip_is_exact(model_pair, tmp_path):
  _, bb, _ = model_pair
  ad = random_adapter(bb.config).with_meta(source_hash="abc", producer="test")
  ad.save(str(tmp_path / "ad"))
  back = lsj.Adapter.load(str(tmp_path / "ad"), backbone=bb)
  assert back.scale == ad.scale and back.metadata == ad.metadata
  for t in ad.targets:
    np.testing.assert_array_equal(np.asarray(back.a[t]), np.asarray(ad.a[t]))
    np.testing.assert_array_equal(np.asarray(back.b[t]), np.asarray(ad.b[t]))
  assert sorted(os.listdir(tmp_path)) == ["ad"]  # no temp files left behind


def _saved(bb, tmp_path):
  path = tmp_path / "ad"
  random_adapter(bb.config).save(str(path))
  return path


def _rewrite_tensors(path, fn):
  tensors = {k: np.array(v) for k, v in SafetensorsFile(str(path / "adapter.safetensors")).items()}
  save_file(fn(tensors), str(path / "adapter.safetensors"))


@pytest.mark.parametrize("corrupt, match", [
    (lambda p: _rewrite_tensors(p, lambda t: {**t, "extra.a": t["q.a"]}), "unknown"),
    (lambda p: _rewrite_tensors(p, lambda t: {k: v for k, v in t.items() if k != "up.b"}), "missing"),
    (lambda p: _rewrite_tensors(p, lambda t: {**t, "q.a": np.where(np.arange(t["q.a"].size).reshape(t["q.a"].shape) == 5, np.nan, t["q.a"]).astype(np.float32)}), "NaN"),
    (lambda p: _rewrite_tensors(p, lambda t: {**t, "q.a": t["q.a"][:, :-1]}), "needs|disagree"),
    (lambda p: (p / "adapter.safetensors").write_bytes((p / "adapter.safetensors").read_bytes()[:500]), "truncated"),
    (lambda p: (p / "adapter.json").write_text("{not json"), "not valid JSON"),
    (lambda p: (p / "adapter.json").unlink(), "missing adapter.json"),
])
def test_bad_files_are_refused(model_pair, tmp_path, corrupt, match):
  _, bb, _ = model_pair
  path = _saved(bb, tmp_path)
  corrupt(path)
  with pytest.raises((lsj.AdapterFileError, lsj.AdapterMismatchError), match=match):
    lsj.Adapter.load(str(path), backbone=bb)


def test_adapter_for_another_base_is_refused(model_pair, tmp_path):
  _, bb, _ = model_pair
  other_path = tmp_path / "other"
  save_tiny_model(other_path, "qwen3", num_hidden_layers=2, hidden_size=32, intermediate_size=40,
                  head_dim=8)
  other = lsj.load_backbone(str(other_path))
  random_adapter(other.config).save(str(tmp_path / "ad"))
  with pytest.raises(lsj.AdapterMismatchError, match="made for base model .* mounted on base model"):
    lsj.Adapter.load(str(tmp_path / "ad"), backbone=bb)
  with pytest.raises(lsj.AdapterMismatchError):
    lsj.forward(bb, [[1, 2]], adapter=random_adapter(other.config))


def test_launch_export_cli(model_pair, tmp_path):
  import subprocess
  import sys
  _, bb, path = model_pair
  random_adapter(bb.config).save(str(tmp_path / "ad"))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for fmt in ("peft", "merged"):
    out = subprocess.run([sys.executable, "-m", "launch.export", f"--adapter={tmp_path / 'ad'}",
                          f"--format={fmt}", f"--model={path}", f"--out={tmp_path / fmt}"],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "peft" / "adapter_model.safetensors").exists()
  assert (tmp_path / "merged" / "config.json").exists()
