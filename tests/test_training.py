"""Training: Stage 1/2 on the tiny config, exact resume, sharded step, bad data, guards."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lskill_jax as lsj
from configs import stage1_tiny, stage2_tiny
from lskill_jax.compiler import hypernet
from lskill_jax.data import pipeline, records
from lskill_jax.data.stage1 import Stage1Options
from lskill_jax.io import write_json, write_jsonl
from lskill_jax.training import optimizer as optim
from lskill_jax.training.step import StepConfig, TrainState, state_shardings, train_step
from lskill_jax.training.trainer import train
from lskill_jax.training.validation import evaluate_checkpoint, validate


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps=4, **train_overrides):
  c = stage1_tiny.get_config()
  c.train.update(steps=steps, batch_size=2, accum=1, log_every=1, eval_every=steps,
                 save_every=2, eval_docs=4, eval_batch_size=2, async_checkpointing=False)
  c.train.update(**train_overrides)
  return c


def _metrics(workdir, kind="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def test_stage1_tiny_runs_and_reports_the_signal(tmp_path):
  out = train(_config(steps=4), str(tmp_path))
  assert out["step"] == 4
  rows = _metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for r in rows:
    assert np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["skipped"] == 0
    assert len(r["delta_w_ratio_by_layer"]) == 2
  val = _metrics(tmp_path, "val")[-1]
  for mode in ("reconstruction", "completion"):
    for cond in ("own", "none", "other"):
      assert np.isfinite(val[f"{mode}/{cond}"])
    assert 0 < val[f"{mode}/adapter_doc_share"] < 1
  assert os.path.isdir(tmp_path / "tb")
  png = tmp_path / "curve.png"
  subprocess.run([sys.executable, "-m", "launch.plot_metrics", f"--workdir={tmp_path}", f"--out={png}"],
                 check=True, cwd=ROOT, capture_output=True)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A saved step measured again later gives the numbers the run logged, and the training split
  # can be measured the same way.
  both = evaluate_checkpoint(_config(), str(tmp_path), step=4, splits=("val", "train"), docs=4)
  again, on_train = both["val"], both["train"]
  for k, v in again.items():
    assert abs(v - val[k]) < 1e-5, k
  assert set(on_train) == set(again) and on_train != again
  with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3; saved steps: \[2, 4\]"):
    evaluate_checkpoint(_config(), str(tmp_path), step=3)
  # The run is a loadable compiler.
  comp = lsj.SkillCompiler.load(str(tmp_path), backbone=lsj.backbone_from_config(_config()))
  assert comp.compile(["Open the fridge, then take the apple."])[0].rank == comp.spec.rank


def test_resume_is_exact(tmp_path):
  straight = train(_config(steps=4, eval_every=0), str(tmp_path / "a"))
  train(_config(steps=4, eval_every=0), str(tmp_path / "b"), max_steps=2)   # "killed" after step 2
  # An interrupted later save leaves only a temporary folder, which must be ignored.
  os.makedirs(tmp_path / "b" / "checkpoints" / "4.orbax-checkpoint-tmp-99" / "params")
  resumed = train(_config(steps=4, eval_every=0), str(tmp_path / "b"))
  assert resumed["step"] == 4
  la = [r["loss"] for r in _metrics(tmp_path / "a")]
  lb = [r["loss"] for r in _metrics(tmp_path / "b")]
  np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
  for x, y in zip(jax.tree.leaves(straight["state"].params), jax.tree.leaves(resumed["state"].params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)


def _step_inputs():
  c = _config()
  bb = lsj.backbone_from_config(c)
  comp = lsj.SkillCompiler.create(bb, c, seed=0)
  texts = [f"Step {i}: open the drawer, take the key, and close it again. " * 3 for i in range(4)]
  opts = Stage1Options(seq_len=256, context_len=128)
  batch = pipeline.stage1_dataset(bb.tokenizer, texts, opts, batch_size=4)[0]
  batch = {k: v for k, v in batch.items() if k != "n_docs"}
  opt, sched = optim.make(1e-3, 1, 10)
  return bb, comp, batch, opt, sched


def test_sharded_train_step_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  bb, comp, batch, opt, sched = _step_inputs()
  cfg = StepConfig(accum=2, remat=True, loss_chunk=64)
  fn = lambda s, b, bp: train_step(s, b, bp, spec=comp.spec, cfg=cfg, optimizer=opt, schedule=sched)
  state = TrainState(jnp.int32(0), comp.params, opt.init(comp.params))
  single_state, single_m = jax.jit(fn)(state, batch, bb.params)

  mesh = lsj.make_mesh(data=2, fsdp=2, tensor=2)
  sbb = lsj.with_mesh(bb, mesh)
  sh = state_shardings(mesh, state)
  sstate = jax.device_put(TrainState(jnp.int32(0), comp.params, opt.init(comp.params)), sh)
  assert sstate.params["metalora"]["a"]["q"].sharding.spec[1] == "fsdp"
  sbatch = {k: jax.device_put(v, lsj.sharding.named_sharding(mesh, ("batch", None), v.shape))
            for k, v in batch.items()}
  with jax.set_mesh(mesh):
    sharded_state, sharded_m = jax.jit(fn, in_shardings=(sh, jax.tree.map(lambda x: x.sharding, sbatch),
                                                         jax.tree.map(lambda x: x.sharding, sbb.params)),
                                       out_shardings=(sh, None))(sstate, sbatch, sbb.params)
  np.testing.assert_allclose(float(sharded_m["loss"]), float(single_m["loss"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(sharded_state.params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)


def test_adapter_doc_share_is_the_between_document_part_of_the_factors():
  bb, comp, batch, _, _ = _step_inputs()
  cfg = StepConfig(accum=1, loss_chunk=64)
  got = validate(comp.params, bb, comp.spec, cfg, [{"reconstruction": batch}], None)
  a, b = hypernet.compile_lora(comp.params, bb.params, batch["doc_tokens"], batch["doc_mask"],
                               spec=comp.spec)
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves((a, b))]  # [L, B, ...] each
  between = sum(((x - x.mean(axis=1, keepdims=True)) ** 2).sum() for x in leaves)
  total = sum((x ** 2).sum() for x in leaves)
  share = got["reconstruction/adapter_doc_share"]
  np.testing.assert_allclose(share, between / total, rtol=1e-4)
  assert 0 < share < 1
  # One document compiled four times: nothing differs between the adapters.
  same = {k: np.repeat(v[:1], len(v), axis=0) for k, v in batch.items()}
  alike = validate(comp.params, bb, comp.spec, cfg, [{"reconstruction": same}], None)
  assert alike["reconstruction/adapter_doc_share"] < 1e-6 * share
  assert abs(alike["reconstruction/own"] - alike["reconstruction/other"]) < 1e-5


def test_non_finite_step_is_skipped_and_params_kept():
  bb, comp, batch, opt, sched = _step_inputs()
  batch["weights"] = batch["weights"] * np.nan
  state = TrainState(jnp.int32(0), comp.params, opt.init(comp.params))
  new, m = jax.jit(lambda s, b, bp: train_step(s, b, bp, spec=comp.spec, cfg=StepConfig(accum=1),
                                               optimizer=opt, schedule=sched))(state, batch, bb.params)
  assert int(m["skipped"]) == 1
  for x, y in zip(jax.tree.leaves(comp.params), jax.tree.leaves(new.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_data_is_named(tmp_path):
  bad = tmp_path / "train.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": broken\n{"nope": 1}\n{"text": "  "}\n')
  with pytest.raises(records.DataError, match=r"train.jsonl:2: malformed JSON"):
    records.read_pretrain_jsonl(str(bad))
  texts, report = records.read_pretrain_jsonl(str(bad), on_error="skip")
  assert texts == ["fine"] and sum(report.skipped.values()) == 3 and "text" in report.summary()
  (tmp_path / "empty.jsonl").write_text("")
  with pytest.raises(records.DataError, match="no usable documents"):
    records.read_pretrain_jsonl(str(tmp_path / "empty.jsonl"))
  c = _config()
  c.data.train = str(tmp_path / "long.jsonl")
  write_jsonl(c.data.train, [{"text": "word " * 2000}] * 3)
  with pytest.raises(records.DataError, match="every document is over"):
    train(c, str(tmp_path / "wd"))
  with pytest.raises(FileNotFoundError, match="build_corpus"):
    records.read_pretrain_jsonl(str(tmp_path / "missing.jsonl"))


def test_stage2_starts_from_stage1(tmp_path):
  train(_config(steps=2, eval_every=0), str(tmp_path / "s1"))
  recs = [{"context": f"Skill {i}: heat the cup with the microwave before placing it.",
           "conversations": [{"role": "user", "content": f"Task {i}: put a hot cup on the table."},
                             {"role": "assistant", "content": "<think>Heat first.</think><action>go to microwave 1</action>"},
                             {"role": "user", "content": "You arrive at microwave 1."},
                             {"role": "assistant", "content": "<action>heat cup 1 with microwave 1</action>"}]}
          for i in range(10)]
  write_json(str(tmp_path / "skill_ift" / "train.json"), recs)
  c = stage2_tiny.get_config()  # its compiler.context_len (128) differs from stage 1's: a limit, not a shape
  c.data.train = str(tmp_path / "skill_ift" / "train.json")
  c.init_from = str(tmp_path / "s1")
  c.train.update(steps=2, async_checkpointing=False, save_every=2, eval_every=2)
  out = train(c, str(tmp_path / "s2"))
  s1 = lsj.SkillCompiler.load(str(tmp_path / "s1"), backbone=lsj.backbone_from_config(c))
  assert out["step"] == 2 and "val/stage2/own" in out
  # Started from stage 1 (not from scratch): the first update moves params only a little.
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(s1.params),
                                                          jax.tree.leaves(out["state"].params)))
  assert diff < 0.05


def test_warm_start_keeps_params_and_can_remeasure_state_statistics(tmp_path):
  c = _config(steps=2, eval_every=0)
  c.compiler.state_norm = "standardize"
  train(c, str(tmp_path / "s1"))
  source = lsj.SkillCompiler.load(str(tmp_path / "s1"), backbone=lsj.backbone_from_config(c)).params
  write_jsonl(str(tmp_path / "other.jsonl"),
              [{"text": "Items: " + " ".join(_ITEMS[i:i + 6]) + "."} for i in range(18)])

  def started(name, **changes):
    w = _config(eval_every=0)
    w.compiler.update(state_norm="standardize", context_len=320)  # a limit may differ
    w.data.train = str(tmp_path / "other.jsonl")
    w.update(init_from=str(tmp_path / "s1"), **changes)
    return train(w, str(tmp_path / name), max_steps=0)["state"].params

  kept, remeasured = started("kept"), started("remeasured", init_recalibrate=True)
  for params in (kept, remeasured):
    for x, y in zip(jax.tree.leaves({**source, "state_stats": None}),
                    jax.tree.leaves({**params, "state_stats": None})):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves(source["state_stats"]), jax.tree.leaves(kept["state_stats"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Short item lists read differently from the starter skills: the statistics must move.
  assert any(float(jnp.abs(x - y).max()) > 1e-3 for x, y in
             zip(jax.tree.leaves(source["state_stats"]), jax.tree.leaves(remeasured["state_stats"])))

  wide = _config(eval_every=0)
  wide.compiler.update(state_norm="standardize", generator_depth=c.compiler.generator_depth + 1)
  wide.init_from = str(tmp_path / "s1")
  with pytest.raises(ValueError, match=r"compiler.generator_depth: \d+ there, \d+ here"):
    train(wide, str(tmp_path / "wide"), max_steps=0)
  alone = _config()
  alone.init_recalibrate = True
  with pytest.raises(ValueError, match="set init_from"):
    train(alone, str(tmp_path / "alone"))


def test_warm_start_from_a_shipped_compiler(tmp_path):
  """init_from may name a single-file compiler directory (what ships with the package)."""
  c = _config(eval_every=0)
  comp = lsj.SkillCompiler.create(lsj.backbone_from_config(c), c, seed=3)
  from lskill_jax.compiler import shipped
  shipped.export(comp, str(tmp_path / "shipped"), dtype="float32")
  c.init_from = str(tmp_path / "shipped")
  params = train(c, str(tmp_path / "run"), max_steps=0)["state"].params
  for x, y in zip(jax.tree.leaves(comp.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_ITEMS = ("apple lamp towel knife bread kettle mirror pillow candle shelf drawer basket spoon "
          "plate window garden ladder bucket hammer rope blanket bottle camera wallet").split()


def test_training_makes_adapters_carry_their_own_document(tmp_path):
  # Documents whose content cannot be guessed (six items drawn at random) are the fastest
  # check that the whole path, from document tokens through memory states, generator and
  # carved factors to the mounted adapter, learns to carry *this* document: on held-out
  # documents the own adapter must beat another document's, not just no adapter at all.
  rng = np.random.default_rng(0)
  for name, n in (("train", 2000), ("val", 16)):
    write_jsonl(str(tmp_path / f"{name}.jsonl"),
                [{"text": "Items: " + " ".join(rng.choice(_ITEMS, 6, replace=False)) + "."}
                 for _ in range(n)])
  c = stage1_tiny.get_config()
  c.compiler.context_len = 48
  c.data.update(train=str(tmp_path / "train.jsonl"), val=str(tmp_path / "val.jsonl"),
                seq_len=96, context_len=48)
  c.train.update(steps=100, batch_size=16, accum=1, lr=3e-3, warmup_steps=10, log_every=50,
                 eval_every=100, eval_docs=16, eval_batch_size=8, save_every=100,
                 async_checkpointing=False)
  train(c, str(tmp_path / "wd"))
  first, last = _metrics(tmp_path / "wd", "val")
  for mode in ("reconstruction", "completion"):
    own, none, other = (last[f"{mode}/{k}"] for k in ("own", "none", "other"))
    assert abs(first[f"{mode}/own"] - first[f"{mode}/other"]) < 0.005  # untrained: no signal
    assert own < none - 0.1, (mode, own, none)
    assert own < other - 0.01, (mode, own, other)


def test_clipping_per_group_and_memory_learning_rate():
  params = {"memory": jnp.ones((3, 4)), "metalora": {"a": jnp.ones((2, 2))},
            "generator": {"w": jnp.ones((4, 4))}}
  grads = {"memory": jnp.full((3, 4), 100.0), "metalora": {"a": jnp.full((2, 2), 0.1)},
           "generator": {"w": jnp.full((4, 4), 0.05)}}
  norms = lambda t: {k: float(optax.global_norm(v)) for k, v in t.items()}
  per_group, _ = optim.clip(1.0, per_group=True).update(grads, optax.EmptyState())
  np.testing.assert_allclose(list(norms(per_group).values()), [1.0, 0.2, 0.2], rtol=1e-6)
  whole, _ = optim.clip(1.0, per_group=False).update(grads, optax.EmptyState())
  assert norms(whole)["generator"] < 1e-3  # the memory tokens' gradient shrank everything
  opt, _ = optim.make(1e-2, 1, 10, memory_lr_scale=0.0, clip_per_group=True)
  new, opt_state = params, opt.init(params)
  for _ in range(2):  # the first step's learning rate is 0 (warmup)
    updates, opt_state = opt.update(grads, opt_state, new)
    new = optax.apply_updates(new, updates)
  np.testing.assert_array_equal(np.asarray(new["memory"]), np.asarray(params["memory"]))
  assert float(jnp.abs(new["generator"]["w"] - params["generator"]["w"]).max()) > 0
