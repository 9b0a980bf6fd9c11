"""The CPU recipe's options: memory-state normalisation, the contrastive term, context
distillation, paired intervals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import lskill_jax as lsj
from conftest import save_tiny_model
from configs import stage1_smollm2_135m_cpu, stage1_tiny
from lskill_jax.compiler import hypernet
from lskill_jax.data import pipeline, records
from lskill_jax.data.stage1 import Stage1Options, split_to_fit
from lskill_jax.io import write_jsonl
from lskill_jax.training import datasets
from lskill_jax.training import optimizer as optim
from lskill_jax.training import run_config
from lskill_jax.training.losses import context_gain_weights, lm_loss, teacher_hidden
from lskill_jax.training.step import (StepConfig, TrainState, contrastive_term, negative_rows,
                                      train_step)
from lskill_jax.training.trainer import train
from lskill_jax.training.validation import paired_interval, validate


def _tiny(state_norm="none"):
  c = stage1_tiny.get_config()
  c.compiler.state_norm = state_norm
  bb = lsj.backbone_from_config(c)
  return c, bb, lsj.SkillCompiler.create(bb, c, seed=0)


def _docs(bb, n=6, T=24):
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, bb.config.vocab_size, (n, T)).astype(np.int32)
  mask = np.ones((n, T), np.int32)
  mask[0, :5] = 0  # one left-padded document
  return tokens, mask


def test_state_statistics_match_numpy():
  x = np.random.default_rng(1).normal(size=(5, 3, 4, 8)).astype(np.float32)
  x[..., 0] = 7.0          # a dimension that never varies: its spread is floored, not divided by 0
  got = hypernet.state_statistics(jnp.asarray(x), floor=1e-2)
  np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
  std = np.sqrt(((x - x.mean(0)) ** 2).mean(axis=(0, 2)))
  std = np.maximum(std, 1e-2 * np.median(std, axis=-1, keepdims=True) + 1e-12)
  np.testing.assert_allclose(got["inv_std"], 1 / std, rtol=1e-4)
  assert np.all(np.isfinite(np.asarray(got["inv_std"])))
  with pytest.raises(ValueError, match="at least 2 documents"):
    hypernet.state_statistics(jnp.asarray(x[:1]))


def test_standardized_states_are_centred_on_the_calibration_documents():
  c, bb, comp = _tiny("standardize")
  spec = comp.spec
  assert set(comp.params) == {"memory", "metalora", "generator", "state_stats"}
  tokens, mask = _docs(bb)
  raw = hypernet.encode_memory(comp.params, bb.params, tokens, mask, spec=spec)
  # Before calibration the statistics are the identity.
  np.testing.assert_array_equal(hypernet.normalize_states(comp.params, raw, spec), raw)
  params = hypernet.calibrate(comp.params, bb.params, [(tokens[:3], mask[:3]), (tokens[3:], mask[3:])],
                              spec=spec)
  z = np.asarray(hypernet.normalize_states(params, raw, spec))
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(np.sqrt((z ** 2).mean(axis=(0, 2))), 1, rtol=1e-3)
  # The statistics are frozen: no gradient reaches them.
  loss = lambda p: jnp.sum(jnp.square(hypernet.compile_lora(p, bb.params, tokens, mask, spec=spec)[0]["q"]))
  g = jax.grad(loss)(params)
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g["state_stats"]))
  assert float(jnp.abs(g["generator"]["layer_0"]["norm1"]["scale"]).max()) > 0
  # A compiler without standardisation is unchanged by calibrate.
  _, _, plain = _tiny("none")
  assert hypernet.calibrate(plain.params, bb.params, [(tokens, mask)], spec=plain.spec) is plain.params


def test_layernorm_normalises_each_state():
  _, bb, comp = _tiny("layernorm")
  tokens, mask = _docs(bb)
  raw = hypernet.encode_memory(comp.params, bb.params, tokens, mask, spec=comp.spec)
  z = np.asarray(hypernet.normalize_states(comp.params, raw, comp.spec))
  x = np.asarray(raw, np.float64)
  centred = x - x.mean(-1, keepdims=True)
  want = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(z.mean(-1), 0, atol=1e-4)


def test_unknown_state_norm_is_refused():
  c, bb, _ = _tiny()
  c.compiler.state_norm = "batchnorm"
  with pytest.raises(ValueError, match="state_norm must be one of"):
    lsj.SkillCompiler.create(bb, c)


def test_contrastive_term_value_and_gradient():
  own = jnp.array([20.0, 30.0, 0.0])      # per-row loss sums
  other = jnp.array([20.0, 36.0, 0.0])
  counts = jnp.array([10.0, 10.0, 0.0])   # the last row has no targets: it contributes nothing
  tau = 0.1
  term, gap = contrastive_term(own, other, counts, tau)
  np.testing.assert_allclose(gap[:2], [0.0, 0.6], rtol=1e-6)
  want = 10 * tau * np.log1p(np.exp(0.0)) + 10 * tau * np.log1p(np.exp(-6.0))
  np.testing.assert_allclose(float(term), want, rtol=1e-5)
  d_own, d_other = jax.grad(lambda o, t: contrastive_term(o, t, counts, tau)[0], argnums=(0, 1))(own, other)
  # At a gap of 0 the term pushes own down and other up with half the LM loss's weight.
  np.testing.assert_allclose([float(d_own[0]), float(d_other[0])], [0.5, -0.5], rtol=1e-6)
  assert 0 < float(d_own[1]) < 0.01 and float(d_own[2]) == 0.0   # faded past the margin


def _batch(bb):
  texts = [f"Step {i}: open drawer {i}, take key {i}, close it. " * 2 for i in range(4)]
  opts = Stage1Options(seq_len=160, context_len=64)
  return {k: v for k, v in pipeline.stage1_dataset(bb.tokenizer, texts, opts, batch_size=4)[0].items()
          if k != "n_docs"}


def _step_metrics(**options):
  """Metrics of one train step from the same state and batch, per set of StepConfig options."""
  c, bb, comp = _tiny()
  batch = _batch(bb)
  opt, sched = optim.make(1e-3, 1, 10)
  state = TrainState(jnp.int32(0), comp.params, opt.init(comp.params))
  run = lambda cfg: jax.jit(lambda s, b, bp: train_step(s, b, bp, spec=comp.spec, cfg=cfg, optimizer=opt,
                                                        schedule=sched))(state, batch, bb.params)[1]
  return [run(StepConfig(accum=2, remat=False, loss_chunk=64, **o)) for o in options.values()]


def test_contrastive_step_reports_lm_loss_and_gap():
  plain, both = _step_metrics(plain={}, both=dict(contrastive_weight=1.0))
  # "loss" stays the language-model loss, so curves with and without the term compare.
  np.testing.assert_allclose(float(both["loss"]), float(plain["loss"]), rtol=1e-6)
  assert float(both["objective"]) > float(both["loss"])
  assert abs(float(both["train_gap"])) < 0.05 and "train_gap" not in plain
  assert float(both["grad_norm"]) != pytest.approx(float(plain["grad_norm"]))


def test_negative_rows_pick_the_nearest_earlier_row_of_the_same_corpus():
  rows = lambda source: np.asarray(negative_rows(jnp.asarray(source))).tolist()
  assert rows([0, 0, 0, 0]) == [3, 0, 1, 2]        # one corpus: the previous row, as before
  assert rows([0, 1, 0, 1]) == [2, 3, 0, 1]        # an even mix: partners from the same corpus
  assert rows([0, 0, 0, 1]) == [2, 0, 1, 2]        # a corpus with one row falls back to i - 1
  assert rows([1, 0, 0, 1, 0]) == [3, 4, 1, 0, 2]


def test_same_source_negatives_score_each_row_with_its_own_corpus():
  c, bb, comp = _tiny()
  batch = _batch(bb)
  opt, sched = optim.make(1e-3, 1, 10)
  state = TrainState(jnp.int32(0), comp.params, opt.init(comp.params))
  step = jax.jit(lambda b, cfg: train_step(state, b, bb.params, spec=comp.spec, cfg=cfg,
                                           optimizer=opt, schedule=sched)[1], static_argnums=1)
  cfg = lambda negatives: StepConfig(accum=1, remat=False, loss_chunk=64, contrastive_weight=1.0,
                                     contrastive_negatives=negatives)
  previous = step(batch, cfg("previous"))
  one_corpus = step({**batch, "source": np.zeros(4, np.int32)}, cfg("same_source"))
  for k in ("objective", "train_gap", "grad_norm"):
    assert float(one_corpus[k]) == float(previous[k]), k
  mixed = step({**batch, "source": np.array([0, 1, 0, 1], np.int32)}, cfg("same_source"))
  # The gap the step reports, recomputed from the compiled adapters with rows 2, 3, 0, 1 as
  # the other documents.
  a, b = hypernet.compile_lora(comp.params, bb.params, batch["doc_tokens"], batch["doc_mask"],
                               spec=comp.spec)
  losses = lambda rows: lm_loss(bb.params, comp.spec.backbone, batch["tokens"], batch["segment_ids"],
                                batch["weights"], {t: {"a": a[t][:, rows], "b": b[t][:, rows]} for t in a},
                                comp.spec.scale, remat=False, chunk=64, per_row=True)
  own, counts = losses([0, 1, 2, 3])
  other, _ = losses([2, 3, 0, 1])
  want = float((other.sum() - own.sum()) / counts.sum())
  np.testing.assert_allclose(float(mixed["train_gap"]), want, rtol=1e-4, atol=1e-6)
  assert float(mixed["train_gap"]) != pytest.approx(float(previous["train_gap"]), abs=1e-7)
  c.train.contrastive_negatives = "same_corpus"
  with pytest.raises(run_config.ConfigError, match="must be one of.*'same_source'"):
    run_config.check_values(c)


def test_distillation_step_adds_the_weighted_kl_and_reports_it():
  plain, distilled = _step_metrics(plain={}, distilled=dict(distill_weight=0.5))
  np.testing.assert_allclose(float(distilled["loss"]), float(plain["loss"]), rtol=1e-6)
  kl = float(distilled["distill_kl"])
  assert kl > 0 and "distill_kl" not in plain
  np.testing.assert_allclose(float(distilled["objective"]), float(plain["loss"]) + 0.5 * kl, rtol=1e-5)
  assert float(distilled["grad_norm"]) != pytest.approx(float(plain["grad_norm"]))


def _documents_and_conversations(bb, Td, T, doc_lens, conv_lens, first_target, *,
                                 repeat_document=False, seed=0):
  """Random left-padded documents [2, Td] and right-padded conversations [2, T] (random, or the
  document repeated), with their masks, segment ids and target weights from `first_target`."""
  rng = np.random.default_rng(seed)
  doc_tokens, doc_mask = np.zeros((2, Td), np.int32), np.zeros((2, Td), np.int32)
  tokens, seg = np.zeros((2, T), np.int32), np.zeros((2, T), np.int32)
  weights = np.zeros((2, T), np.float32)
  for i, (nd, nc) in enumerate(zip(doc_lens, conv_lens)):
    doc = rng.integers(1, bb.config.vocab_size, nd)
    doc_tokens[i, Td - nd:], doc_mask[i, Td - nd:] = doc, 1
    tokens[i, :nc] = (np.concatenate([doc, doc])[:nc] if repeat_document
                      else rng.integers(1, bb.config.vocab_size, nc))
    seg[i, :nc] = 1
    weights[i, first_target:nc] = 1.0
  return doc_tokens, doc_mask, tokens, seg, weights


def test_distillation_kl_matches_transformers_reading_the_document(tmp_path):
  # Teacher: the backbone reading [document, conversation]; student: the conversation alone.
  # Padding on both sides and a loss chunk that does not divide the length.
  ref = save_tiny_model(tmp_path)
  bb = lsj.load_backbone(str(tmp_path))
  Td, T, doc_lens, conv_lens = 7, 9, (7, 3), (9, 5)
  doc_tokens, doc_mask, tokens, seg, weights = _documents_and_conversations(
      bb, Td, T, doc_lens, conv_lens, first_target=2)
  h_t = teacher_hidden(bb.params, bb.config, doc_tokens, doc_mask, tokens, seg)
  ce, kl, count = lm_loss(bb.params, bb.config, tokens, seg, weights, None, 0.0, remat=False,
                          chunk=4, per_row=True, teacher_h=h_t)
  for i, (nd, nc) in enumerate(zip(doc_lens, conv_lens)):
    doc, conv = doc_tokens[i, Td - nd:].tolist(), tokens[i, :nc].tolist()
    with torch.no_grad():
      teacher = torch.log_softmax(ref(torch.tensor([doc + conv])).logits[0, nd:].double(), -1)
      student = torch.log_softmax(ref(torch.tensor([conv])).logits[0].double(), -1)
    w = torch.tensor(weights[i, 1:nc], dtype=torch.float64)  # position t predicts token t + 1
    want_kl = (w * (teacher.exp() * (teacher - student)).sum(-1)[:-1]).sum()
    want_ce = -(w * student[:-1].gather(1, torch.tensor(conv[1:])[:, None])[:, 0]).sum()
    np.testing.assert_allclose(float(kl[i]), float(want_kl), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(ce[i]), float(want_ce), rtol=1e-5)
    assert float(count[i]) == float(w.sum())


def test_context_gain_weights_match_transformers_with_and_without_the_document(tmp_path):
  # Each target token's weight is ∝ max(CE reading the conversation alone − CE reading
  # [document, conversation], 0), rescaled to keep the row's total weight.
  ref = save_tiny_model(tmp_path)
  bb = lsj.load_backbone(str(tmp_path))
  Td, T, doc_lens, conv_lens = 6, 10, (6, 4), (10, 7)
  doc_tokens, doc_mask, tokens, seg, weights = _documents_and_conversations(
      bb, Td, T, doc_lens, conv_lens, first_target=1, repeat_document=True, seed=1)
  h_t = teacher_hidden(bb.params, bb.config, doc_tokens, doc_mask, tokens, seg)
  got = np.asarray(context_gain_weights(bb.params, bb.config, tokens, seg, weights, h_t, chunk=3))
  for i, (nd, nc) in enumerate(zip(doc_lens, conv_lens)):
    doc, conv = doc_tokens[i, Td - nd:].tolist(), tokens[i, :nc].tolist()
    with torch.no_grad():
      with_doc = torch.log_softmax(ref(torch.tensor([doc + conv])).logits[0, nd:].double(), -1)
      alone = torch.log_softmax(ref(torch.tensor([conv])).logits[0].double(), -1)
    nxt = torch.tensor(conv[1:])[:, None]
    gain = (with_doc[:-1].gather(1, nxt) - alone[:-1].gather(1, nxt))[:, 0].clamp(min=0).numpy()
    want = np.zeros(T)
    want[1:nc] = weights[i, 1:nc] * gain
    want *= weights[i].sum() / want.sum()
    np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)
    assert got[i, 0] == 0 and got[i, nc:].sum() == 0
  # Copying the document is where reading it helps: repeated tokens weigh most.
  assert got[0, 7:10].mean() > got[0, 1:6].mean()


def test_context_gain_step_trains_and_unknown_weightings_are_refused():
  plain, gained = _step_metrics(plain={}, gained=dict(target_weighting="context_gain"))
  assert np.isfinite(float(gained["loss"])) and float(gained["loss"]) != pytest.approx(float(plain["loss"]))
  assert float(gained["target_tokens"]) == pytest.approx(float(plain["target_tokens"]), rel=1e-5)
  c = stage1_tiny.get_config()
  c.train.target_weighting = "surprisal"
  with pytest.raises(run_config.ConfigError, match="train.target_weighting='surprisal' must be one of"):
    run_config.check_values(c)


def test_paired_interval():
  rng = np.random.default_rng(0)
  d = rng.normal(0.3, 0.1, 64)
  mean, low, high = paired_interval(d)
  assert mean == pytest.approx(d.mean())
  half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
  assert low == pytest.approx(mean - half, abs=0.01) and high == pytest.approx(mean + half, abs=0.01)
  assert np.isnan(paired_interval([1.0])[1])


def test_validation_reports_paired_gaps_per_document():
  c, bb, comp = _tiny()
  batch = _batch(bb)
  got = validate(comp.params, bb, comp.spec, StepConfig(loss_chunk=64), [{"reconstruction": batch}], None)
  assert got["reconstruction/docs"] == 4
  assert got["reconstruction/gap_other_low"] <= got["reconstruction/gap_other"] <= got["reconstruction/gap_other_high"]
  # The mean of per-document differences is not the token-weighted difference of the means, but
  # with documents of similar length the two are close.
  tok = got["reconstruction/other"] - got["reconstruction/own"]
  assert got["reconstruction/gap_other"] == pytest.approx(tok, abs=0.05)


def test_cpu_recipe_trains_on_the_tiny_backbone(tmp_path):
  # The recipe's compiler and optimiser options on the tiny backbone: calibration at start,
  # the contrastive term, context distillation, per-group clipping, frozen memory tokens, exact
  # resume.
  c = stage1_smollm2_135m_cpu.get_config()
  tiny = stage1_tiny.get_config()
  for k in ("name", "model", "backbone_shape", "tokenizer_corpus", "dtype"):
    c[k] = tiny[k]
  heads = tiny.backbone_shape["num_attention_heads"]
  c.compiler.update(rank=2, metalora_rank=4, generator_width=2 * heads * 4, generator_heads=heads,
                    context_len=tiny.data.context_len)
  c.data.update(seq_len=tiny.data.seq_len, context_len=tiny.data.context_len)
  c.train.update(steps=4, batch_size=4, log_every=1, eval_every=4, eval_docs=4, eval_batch_size=4,
                 save_every=2, async_checkpointing=False, progress_bar=False, calibration_docs=8,
                 contrastive_weight=0.5, distill_weight=0.5)
  out = train(c, str(tmp_path / "a"))
  assert np.isfinite(out["distill_kl"]) and out["distill_kl"] > 0
  params = out["state"].params
  assert float(jnp.abs(params["state_stats"]["mean"]).max()) > 0   # calibrated
  for name in ("reconstruction", "completion"):
    assert np.isfinite(out[f"val/{name}/gap_other"])
  comp = lsj.SkillCompiler.load(str(tmp_path / "a"), backbone=lsj.backbone_from_config(c))
  np.testing.assert_array_equal(comp.params["state_stats"]["inv_std"], params["state_stats"]["inv_std"])
  assert dataclasses.asdict(comp.spec)["state_norm"] == "standardize"
  train(c, str(tmp_path / "b"), max_steps=2)
  resumed = train(c, str(tmp_path / "b"))
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(resumed["state"].params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)


def test_contrastive_term_needs_two_examples_per_micro_batch():
  c = stage1_tiny.get_config()
  c.train.update(batch_size=4, accum=4, contrastive_weight=1.0)
  with pytest.raises(run_config.ConfigError, match="at least 2 examples"):
    run_config.check_values(c)
  c.train.accum = 2
  run_config.check_values(c)


@pytest.mark.parametrize("name", ["contrastive_weight", "distill_weight"])
def test_loss_term_weights_must_be_finite_and_non_negative(name):
  c = stage1_tiny.get_config()
  c.train[name] = -1.0
  with pytest.raises(run_config.ConfigError, match=f"train.{name}=-1.0 must be a finite number >= 0"):
    run_config.check_values(c)


def test_split_to_fit_cuts_at_paragraphs_lines_then_words_and_keeps_the_order():
  count = lambda s: len(s.split())  # one token per word keeps the arithmetic visible
  paras = [" ".join(f"p{i}w{j}" for j in range(n)) for i, n in enumerate([10, 10, 35, 5, 12])]
  pieces = split_to_fit("\n\n".join(paras), count, budget=24, min_tokens=3)
  assert all(3 <= count(p) <= 24 for p in pieces)
  words = [w for p in pieces for w in p.split()]
  assert words == " ".join(paras).split()  # nothing lost or reordered
  assert pieces[0] == paras[0] + "\n\n" + paras[1]  # short paragraphs join
  assert split_to_fit("short text", count, budget=24, min_tokens=3) == []  # under min_tokens
  lines = "\n".join(" ".join(["w"] * 8) for _ in range(6))  # one paragraph of 48 words
  assert [count(p) for p in split_to_fit(lines, count, budget=20, min_tokens=1)] == [16, 16, 16]


def test_overlong_split_keeps_long_documents_as_pieces(tmp_path):
  c = stage1_tiny.get_config()
  bb = lsj.backbone_from_config(c)
  long = "\n\n".join(" ".join(f"word{i}x{j}" for j in range(40)) for i in range(30))
  texts = ["a short document about opening the fridge first " * 3, long]
  assert datasets.fitting(bb.tokenizer, texts, 256, "train") == texts[:1]
  pieces = datasets.fitting(bb.tokenizer, texts, 256, "train", overlong="split")
  assert pieces[0] == texts[0] and len(pieces) > 3
  n = [len(bb.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in pieces]
  assert max(n) <= 256 - 43
  # Validation interleaves the pieces, so each entry's neighbour (its "other" document) comes
  # from another document.
  two = [long.replace("word", f"{tag} word") for tag in ("first", "second")]
  mixed = datasets.fitting(bb.tokenizer, two, 256, "validation", overlong="split", interleave=True)
  assert sorted(mixed) == sorted(datasets.fitting(bb.tokenizer, two, 256, "train", overlong="split"))
  assert [("first" in p, "second" in p) for p in mixed[:6]] == [(True, False), (False, True)] * 3
  c.data.overlong = "chop"
  with pytest.raises(run_config.ConfigError, match="data.overlong='chop'"):
    run_config.check_values(c)


def test_a_second_corpus_is_mixed_in_at_its_fraction_of_the_examples(tmp_path):
  c = stage1_tiny.get_config()
  bb = lsj.backbone_from_config(c)
  texts = [f"To open drawer {i}, pull the handle and look inside. " * 3 for i in range(40)]
  items = [f"Items: apple lamp towel{i} knife bread kettle." for i in range(40)]
  opts = Stage1Options(seq_len=160, context_len=64)
  alone = pipeline.stage1_dataset(bb.tokenizer, texts, opts, batch_size=4)
  mixed = pipeline.stage1_dataset(bb.tokenizer, texts, opts, batch_size=4, mix_texts=items,
                                  mix_fraction=0.25)
  from_items = [["Items:" in bb.tokenizer.decode(row[m > 0]) for row, m in
                 zip(mixed[k]["doc_tokens"], mixed[k]["doc_mask"])] for k in range(8)]
  assert sum(map(sum, from_items)) == 8  # a quarter of 32 examples
  assert not any(from_items[0][:3])      # the main corpus leads
  assert [mixed[k]["source"].tolist() for k in range(8)] == [list(map(int, f)) for f in from_items]
  assert "source" not in alone[0]
  unmixed = pipeline.stage1_dataset(bb.tokenizer, texts, opts, batch_size=4, mix_texts=items,
                                    mix_fraction=0.0)
  for k in range(3):
    for key in alone[k]:
      np.testing.assert_array_equal(alone[k][key], unmixed[k][key])
  write_jsonl(str(tmp_path / "train.jsonl"), [{"text": t} for t in texts])
  write_jsonl(str(tmp_path / "items.jsonl"), [{"text": t} for t in items])
  c.data.update(train=str(tmp_path / "train.jsonl"), mix=str(tmp_path / "items.jsonl"),
                mix_fraction=0.5, seq_len=160, context_len=64)
  c.train.batch_size = 4
  run_config.check_values(c)
  train_ds, _ = datasets.make_datasets(c, bb.tokenizer)
  assert sum("Items:" in bb.tokenizer.decode(row[m > 0]) for k in range(4) for row, m in
             zip(train_ds[k]["doc_tokens"], train_ds[k]["doc_mask"])) == 8
  # The corpus of each row reaches the step: the contrastive term pairs rows of one corpus.
  c.train.update(steps=2, accum=1, log_every=1, eval_every=0, save_every=2, progress_bar=False,
                 async_checkpointing=False, contrastive_weight=1.0,
                 contrastive_negatives="same_source")
  assert np.isfinite(train(c, str(tmp_path / "run"), backbone=bb)["train_gap"])
  c.data.update(mix="", mix_fraction=0.25)
  with pytest.raises(run_config.ConfigError, match="needs data.mix"):
    run_config.check_values(c)
  c.data.update(mix="items.jsonl", mix_fraction=1.0)
  with pytest.raises(run_config.ConfigError, match=r"must be a number in \[0, 1\)"):
    run_config.check_values(c)


def test_the_mixed_in_corpus_can_split_its_long_documents_while_the_main_one_skips(tmp_path):
  c = stage1_tiny.get_config()
  bb = lsj.backbone_from_config(c)
  short = [f"To open drawer {i}, pull the handle and look inside." for i in range(40)]
  long = ["\n\n".join(f"Skill {i}, step {k}: check the valve, then the gauge." for k in range(40))
          for i in range(3)]
  write_jsonl(str(tmp_path / "train.jsonl"), [{"text": t} for t in short + long])
  write_jsonl(str(tmp_path / "skills.jsonl"), [{"text": t} for t in long])
  c.data.update(train=str(tmp_path / "train.jsonl"), mix=str(tmp_path / "skills.jsonl"),
                mix_fraction=0.5, seq_len=160, context_len=64, overlong="skip")
  c.train.batch_size = 4

  def docs(ds, n=4):
    return [bb.tokenizer.decode(row[m > 0]) for k in range(n)
            for row, m in zip(ds[k]["doc_tokens"], ds[k]["doc_mask"])]

  with pytest.raises(records.DataError, match="every document is over.*data.mix_overlong=split"):
    datasets.make_datasets(c, bb.tokenizer)   # the mix inherits "skip": nothing of it fits
  c.data.mix_overlong = "split"
  run_config.check_values(c)
  train_ds, _ = datasets.make_datasets(c, bb.tokenizer)
  seen = docs(train_ds)
  assert sum("Skill" in d for d in seen) == 8              # half of 16 examples: skill pieces
  assert not any("Skill" in d and "step 39" in d and "step 0:" in d for d in seen)  # pieces, not wholes
  c.data.mix_overlong = "chop"
  with pytest.raises(run_config.ConfigError, match="data.mix_overlong='chop'"):
    run_config.check_values(c)


def test_frozen_groups_keep_their_params_and_leave_the_encode_forward_only():
  c, bb, comp = _tiny()
  batch = _batch(bb)
  frozen = ("memory", "metalora")

  def run(cfg_frozen):
    """Params after two steps, each step's metrics, and the compiled step's cost analysis."""
    opt, sched = optim.make(1e-3, 1, 10, clip_per_group=True, frozen=cfg_frozen)
    state = TrainState(jnp.int32(0), comp.params, opt.init(comp.params))
    cfg = StepConfig(accum=1, remat=False, loss_chunk=64, contrastive_weight=1.0, frozen=cfg_frozen)
    step = jax.jit(lambda s, b, bp: train_step(s, b, bp, spec=comp.spec, cfg=cfg, optimizer=opt,
                                               schedule=sched)).lower(state, batch, bb.params).compile()
    metrics = []
    for _ in range(2):  # the second step would carry Adam's momentum, were it not zeroed
      state, m = step(state, batch, bb.params)
      metrics.append(m)
    return state.params, metrics, step.cost_analysis()

  trained, metrics, cost = run(())
  kept, kept_metrics, kept_cost = run(frozen)
  # A run may start freezing when it resumes: the optimizer state keeps its structure.
  structure = lambda f: jax.tree.structure(optim.make(1e-3, 1, 10, clip_per_group=True,
                                                      frozen=f)[0].init(comp.params))
  assert structure(frozen) == structure(())
  for group in frozen:
    for new, old in zip(jax.tree.leaves(kept[group]), jax.tree.leaves(comp.params[group])):
      np.testing.assert_array_equal(new, old)
    assert float(kept_metrics[0][f"grad_norm_{group}"]) == 0.0
  assert float(metrics[0]["grad_norm_metalora"]) > 0
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(trained["metalora"]),
                                                      jax.tree.leaves(comp.params["metalora"])))
  # The generator's first gradient does not depend on whether the encode is differentiated
  # (after one step the two runs read different memory states).
  np.testing.assert_allclose(float(kept_metrics[0]["grad_norm_generator"]),
                             float(metrics[0]["grad_norm_generator"]), rtol=1e-5)
  np.testing.assert_allclose(float(kept_metrics[0]["loss"]), float(metrics[0]["loss"]), rtol=1e-6)
  # What the option is for: the compiled step does less work. (XLA's count takes the layer
  # scan's body once, so the difference is not the size of the saving, only its sign.)
  assert kept_cost["flops"] < cost["flops"] - 1e6, (kept_cost["flops"], cost["flops"])
  c.train.frozen = ("memory", "metalora", "generator")
  with pytest.raises(run_config.ConfigError, match="not all of them"):
    run_config.check_values(c)
  c.train.frozen = ("memory", "embeddings")
  with pytest.raises(run_config.ConfigError, match="train.frozen"):
    run_config.check_values(c)
  c.train.frozen = ("memory,metalora",)  # as the command line delivers --config.train.frozen=memory,metalora
  run_config.check_values(c)
  assert run_config.frozen_groups(c.train) == frozen
