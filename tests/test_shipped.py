"""Single-file compilers (the shipped format), `SkillCompiler.pretrained`, and `loss_matrix`."""

import json
import os
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest

import lskill_jax as lsj
from configs import stage1_tiny, tiny
from lskill_jax.compiler import checkpoint as ckpt
from lskill_jax.compiler import shipped
from lskill_jax.training.trainer import train
from lskill_jax.io import write_jsonl
from lskill_jax.training.validation import (cut_at_paragraphs, cut_at_tokens, cut_document, loss_matrix,
                                            matrix_gaps)
from lskill_jax.weights.safetensors_file import SafetensorsFile, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["Always open the fridge before looking for food inside it.",
        "Use short keyword queries; verify the answer in a second passage before answering.",
        "Heat the mug with the microwave, then put it in the coffee machine."]


@pytest.fixture(scope="module")
def comp():
  """A tiny compiler with every parameter perturbed (fresh ones have zero-init pieces)."""
  c = tiny.get_config()
  fresh = lsj.SkillCompiler.create(lsj.backbone_from_config(c), c, seed=0)
  leaves, treedef = jax.tree.flatten(fresh.params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  return lsj.SkillCompiler(fresh.backbone, fresh.spec, jax.tree.unflatten(treedef, noisy))


def test_float32_file_roundtrips_exactly(comp, tmp_path):
  shipped.export(comp, str(tmp_path / "c"), dtype="float32", card="# card\n")
  assert sorted(os.listdir(tmp_path / "c")) == ["card.md", "compiler.json", "params.safetensors"]
  back = lsj.SkillCompiler.load(str(tmp_path / "c"), comp.backbone)
  assert back.checkpoint_id == comp.checkpoint_id
  want, got = comp.compile([DOCS[0]])[0], back.compile([DOCS[0]])[0]
  np.testing.assert_array_equal(np.asarray(got.b["down"]), np.asarray(want.b["down"]))


def test_bfloat16_file_is_half_the_size_and_rounds_each_leaf(comp, tmp_path):
  shipped.export(comp, str(tmp_path / "f32"), dtype="float32")
  shipped.export(comp, str(tmp_path / "bf16"))
  size = lambda d: os.path.getsize(tmp_path / d / "params.safetensors")
  assert size("bf16") < 0.55 * size("f32")
  back = lsj.SkillCompiler.load(str(tmp_path / "bf16"), comp.backbone)
  for x, y in zip(jax.tree.leaves(comp.params), jax.tree.leaves(back.params)):
    assert y.dtype == x.dtype  # loading casts back to the spec's dtype
    rounded = np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(y), rounded)


def test_standardisation_statistics_stay_float32_in_a_bfloat16_file(tmp_path):
  c = tiny.get_config()
  c.compiler.state_norm = "standardize"
  comp = lsj.SkillCompiler.create(lsj.backbone_from_config(c), c, seed=0)
  stats = jax.tree.map(lambda x: x + 100.0 + 0.01 * jax.random.normal(jax.random.key(2), x.shape),
                       comp.params["state_stats"])
  comp = lsj.SkillCompiler(comp.backbone, comp.spec, {**comp.params, "state_stats": stats})
  shipped.export(comp, str(tmp_path / "c"))
  back = lsj.SkillCompiler.load(str(tmp_path / "c"), comp.backbone)
  for x, y in zip(jax.tree.leaves(stats), jax.tree.leaves(back.params["state_stats"])):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_a_file_for_another_configuration_is_refused_by_name(comp, tmp_path):
  d = str(tmp_path / "c")
  shipped.export(comp, d)
  flat = dict(SafetensorsFile(os.path.join(d, "params.safetensors")).items())
  key = sorted(flat)[0]
  flat[key + "_renamed"] = flat.pop(key)
  save_file(flat, os.path.join(d, "params.safetensors"))
  with pytest.raises(ckpt.CheckpointError, match="missing"):
    lsj.SkillCompiler.load(d, comp.backbone)
  flat[key] = flat.pop(key + "_renamed")[..., :1]
  save_file(flat, os.path.join(d, "params.safetensors"))
  with pytest.raises(ckpt.CheckpointError, match="has shape"):
    lsj.SkillCompiler.load(d, comp.backbone)


def test_pretrained_without_a_shipped_compiler_says_what_to_do(comp):
  with pytest.raises(shipped.NoShippedCompilerError, match="launch.train"):
    lsj.SkillCompiler.pretrained(comp.backbone)


def test_pretrained_finds_a_compiler_by_fingerprint(comp, tmp_path, monkeypatch):
  monkeypatch.setattr(shipped, "SHIPPED_DIR", str(tmp_path))
  shipped.export(comp, str(tmp_path / "tiny"), dtype="float32")
  assert json.load(open(tmp_path / "tiny" / "compiler.json"))["base_model"] == comp.backbone.source
  back = lsj.SkillCompiler.pretrained(comp.backbone)
  assert back.checkpoint_id == comp.checkpoint_id


def test_loss_matrix_rows_are_adapters_and_the_last_is_the_plain_backbone(comp):
  m = loss_matrix(comp, DOCS)
  assert m.shape == (4, 3) and np.isfinite(m).all()
  # At alpha 0 every adapter is the plain backbone: all rows equal the last one.
  flat = loss_matrix(comp, DOCS, alpha=0.0)
  np.testing.assert_allclose(flat, np.broadcast_to(flat[-1], flat.shape), rtol=1e-5)
  np.testing.assert_allclose(flat[-1], m[-1], rtol=1e-5)
  assert not np.allclose(m[0], m[-1])
  completion = loss_matrix(comp, DOCS, mode="completion")
  assert completion.shape == (4, 3) and not np.allclose(completion[:3], m[:3])
  with pytest.raises(ValueError, match="mode"):
    loss_matrix(comp, DOCS, mode="summary")
  with pytest.raises(ValueError, match="two non-empty"):
    loss_matrix(comp, [DOCS[0], "  "])


def test_matrix_gaps_compare_each_own_adapter_with_the_mean_of_the_others():
  m = np.array([[1.0, 2.2, 3.0],
                [1.6, 2.0, 3.1],
                [1.3, 2.3, 3.2],   # document 2's own adapter is worse than the others' mean
                [2.0, 2.5, 3.5]])
  g = matrix_gaps(m)
  other, own = np.array([1.45, 2.25, 3.05]), np.array([1.0, 2.0, 3.2])
  assert g["docs"] == 3 and g["positive"] == 2
  np.testing.assert_allclose([g["own"], g["none"], g["other"]], [own.mean(), 8 / 3, other.mean()])
  np.testing.assert_allclose(g["gap_other"], (other - own).mean())
  np.testing.assert_allclose(g["gap_none"], (np.array([2, 2.5, 3.5]) - own).mean())
  assert g["gap_other_low"] <= g["gap_other"] <= g["gap_other_high"]
  with pytest.raises(ValueError, match=r"\[N \+ 1, N\]"):
    matrix_gaps(m[:3])


def test_cut_at_paragraphs_keeps_whole_leading_paragraphs_within_the_budget():
  words = lambda t: len(t.split())
  text = "one two three\n\nfour five\n\nsix seven eight nine"
  assert cut_at_paragraphs(text, words, 5) == "one two three\n\nfour five"
  assert cut_at_paragraphs(text, words, 4) == "one two three"
  assert cut_at_paragraphs(text, words, 2) == ""
  assert cut_at_paragraphs(text, words, 99) == text


def test_cut_at_tokens_keeps_exactly_the_first_tokens_and_no_half_character():
  tok = lsj.backbone_from_config(stage1_tiny.get_config()).tokenizer
  count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])
  text = "Open the drawer, then take the key. " * 40
  cut = cut_at_tokens(text, tok, 17)
  assert count(cut) == 17 and text.startswith(cut)
  assert cut_at_tokens("Open it.", tok, 99) == "Open it."
  emoji = "\U0001F9EA" * 30  # several byte-level tokens per character
  for n in range(1, 8):
    assert "\ufffd" not in cut_at_tokens(emoji, tok, n) and emoji.startswith(cut_at_tokens(emoji, tok, n))
  paragraphs = "Open the drawer.\n\n" + "Take the key. " * 40
  assert cut_document(paragraphs, tok, 17, "token") == cut_at_tokens(paragraphs, tok, 17)
  assert cut_document(paragraphs, tok, 17) == "Open the drawer."
  with pytest.raises(ValueError, match="'paragraph', 'token'"):
    cut_document(paragraphs, tok, 17, "sentence")


def test_ship_compiler_packages_a_trained_run_with_its_held_out_card(tmp_path):
  c = stage1_tiny.get_config()
  c.train.update(steps=2, batch_size=2, accum=1, eval_every=2, save_every=2, eval_docs=4,
                 eval_batch_size=2, async_checkpointing=False)
  work, res, out = tmp_path / "run", tmp_path / "val.json", tmp_path / "shipped" / "tiny"
  train(c, str(work))
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                                     text=True, timeout=600)
  v = run("launch.validate", f"--workdir={work}", "--step=2", "--docs=4", f"--out={res}")
  assert v.returncode == 0, v.stderr[-3000:]
  # The step measured on documents of one's own, every adapter against every other.
  write_jsonl(str(tmp_path / "skills.jsonl"), [{"text": d + "\n\n" + "More detail. " * 300} for d in DOCS])
  d = run("launch.validate", f"--workdir={work}", "--step=2", f"--documents={tmp_path / 'skills.jsonl'}",
          "--cut=40", "--cut_at=token", f"--out={tmp_path / 'docs.json'}")
  assert d.returncode == 0, d.stderr[-3000:]
  assert json.load(open(tmp_path / "docs.json"))["cut_at"] == "token"
  got = json.load(open(tmp_path / "docs.json"))[str(tmp_path / "skills.jsonl")]
  assert set(got) == {"reconstruction", "completion"} and got["reconstruction"]["docs"] == 3
  assert np.array(got["completion"]["loss_matrix"]).shape == (4, 3)
  assert "of 3" in d.stdout
  s = run("launch.ship_compiler", f"--workdir={work}", "--step=2", f"--results={res}",
          f"--documents_results={tmp_path / 'docs.json'}", f"--out={out}",
          "--command=python -m launch.train --config=configs/stage1_tiny.py")
  assert s.returncode == 0, s.stderr[-3000:]
  card = (out / "card.md").read_text()
  assert "| val | reconstruction | 4 |" in card and "| val | completion | 4 |" in card
  assert "| skills.jsonl | 40 tokens | reconstruction | 3 |" in card and " of 3 |" in card
  assert "configs/stage1_tiny.py" in card and "differ from the float32 checkpoint" in card
  assert sorted(os.listdir(tmp_path / "shipped")) == ["tiny"]  # no probe or old copy left
  trained = lsj.SkillCompiler.load(str(work), lsj.backbone_from_config(c))
  back = lsj.SkillCompiler.load(str(out), trained.backbone)
  for x, y in zip(jax.tree.leaves(trained.params), jax.tree.leaves(back.params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-2, atol=1e-6)
  wrong = run("launch.ship_compiler", f"--workdir={work}", "--step=1", f"--results={res}", f"--out={out}")
  assert wrong.returncode == 2 and "not --step=1" in wrong.stderr
  short = run("launch.validate", f"--workdir={work}", f"--documents={tmp_path / 'skills.jsonl'}", "--cut=3")
  assert short.returncode == 2 and "raise --cut" in short.stderr
