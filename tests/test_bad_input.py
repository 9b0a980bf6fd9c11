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
from lskill_jax.data import records
from lskill_jax.data.documents import find_skill_files, read_skill
from lskill_jax.inference import PromptError, PromptTooLongError
from lskill_jax.training import optimizer as optim
from lskill_jax.training import run_config
from lskill_jax.training import trainer
from lskill_jax.training.trainer import NonFiniteLossError, train
from lskill_jax.weights.safetensors_file import CorruptFileError, SafetensorsFile, save_file

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
  with pytest.raises(PromptError, match="at least one token"):  # a launcher's one-line error
    lsj.generate_ids(bb, [[1, 2], []], max_new_tokens=4)


# ----------------------------------------------------------------------------- resuming


def test_resume_with_another_config_is_refused_before_anything_is_written(tmp_path):
  wd = tmp_path / "w"
  train(_config(), str(wd))
  before = _files(wd)

  def changed(field, value, steps=2):
    c = _config(steps)
    section, name = field.split(".")
    c[section][name] = value
    return c

  for field, value in (("train.lr", 5e-4), ("compiler.scale", 2e-3), ("train.seed", 1),
                       ("data.seed", 3), ("data.train", str(tmp_path / "other.jsonl")),
                       ("train.steps", 1), ("train.warmup_steps", 5)):
    with pytest.raises(run_config.ConfigChangedError, match=rf"{field}: .* -> .*--allow_changes="):
      train(changed(field, value), str(wd))
    assert _files(wd) == before, field
  # A shape change cannot be allowed at all, and leaves the workdir a loadable compiler.
  with pytest.raises(run_config.ConfigChangedError, match="parameter shapes.*changed: compiler.rank"):
    train(changed("compiler.rank", 4, steps=6), str(wd), allow_changes=["compiler.rank"])
  assert _files(wd) == before
  lsj.SkillCompiler.load(str(wd), backbone=lsj.backbone_from_config(_config()))
  with pytest.raises(run_config.ConfigError, match="name no config field"):
    train(changed("train.lr", 5e-4), str(wd), allow_changes=["train.lrr"])

  # More steps and other frequencies need no permission; a new lr does, and is recorded.
  c = _config(steps=4, lr=5e-4, log_every=2, save_every=4)
  assert train(c, str(wd), allow_changes=["train.lr"])["step"] == 4
  assert json.loads((wd / "config.json").read_text())["train"]["lr"] == 5e-4
  change, = [json.loads(x) for x in (wd / "config_changes.jsonl").read_text().splitlines()]
  assert change["step"] == 2 and set(change["changes"]) >= {"train.lr", "train.steps"}
  assert change["changes"]["train.lr"] == {"from": 1e-3, "to": 5e-4}


def test_fields_a_recorded_config_lacks_are_compared_with_their_defaults(tmp_path):
  wd = tmp_path / "w"
  train(_config(), str(wd))
  # A run recorded before train.memory_lr_scale and compiler.layer_axis_first existed.
  cfg = json.loads((wd / "config.json").read_text())
  del cfg["train"]["memory_lr_scale"], cfg["compiler"]["layer_axis_first"]
  (wd / "config.json").write_text(json.dumps(cfg))
  spec = json.loads((wd / "compiler.json").read_text())
  del spec["spec"]["layer_axis_first"]
  (wd / "compiler.json").write_text(json.dumps(spec))
  with pytest.raises(run_config.ConfigChangedError, match=r"train.memory_lr_scale: 1.0 -> 0.5"):
    train(_config(steps=3, memory_lr_scale=0.5), str(wd))
  assert train(_config(steps=3), str(wd))["step"] == 3  # the defaults: what the run used


def test_a_resume_whose_optimizer_state_no_longer_fits_asks_for_init_from(tmp_path):
  wd = tmp_path / "w"
  train(_config(), str(wd))
  before = _files(wd)
  # Scaling the memory tokens' updates adds optimizer state: the step cannot be resumed.
  with pytest.raises(run_config.ConfigError, match=r"init_from=.*checkpoints/2"):
    train(_config(steps=4, memory_lr_scale=0.5), str(wd), allow_changes=["train.memory_lr_scale"])
  assert _files(wd) == before
  # Freezing groups keeps the optimizer's state as it was, so a run may start freezing on resume.
  frozen = _config(steps=4, frozen=("memory", "metalora"))
  assert train(frozen, str(wd), allow_changes=["train.frozen"])["step"] == 4


def test_differences_are_field_by_field():
  old = {"a": 1, "s": {"x": [1, 2], "gone": 0}}
  new = {"a": 1, "s": {"x": [1, 3], "new": 5, "same_as_default": 7}, "t": {"u": 1}}
  got = run_config.differences(old, new, {"s.same_as_default": 7, "t.u": 1})
  assert set(got) == {"s.x", "s.new"} and got["s.x"] == ([1, 2], [1, 3])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted 4-step run: what every interrupted one must end with, bit for bit."""
  return train(_config(steps=4), str(tmp_path_factory.mktemp("straight")))["state"]


def test_stop_after_saves_the_step_it_stops_at(tmp_path, straight):
  train(_config(steps=4), str(tmp_path / "b"), max_steps=3)  # 3 is not a multiple of save_every
  assert _saved_steps(tmp_path / "b") == [2, 3]
  resumed = train(_config(steps=4), str(tmp_path / "b"))
  _leaves_equal(resumed["state"].params, straight.params)


def test_sigterm_saves_the_step_it_stops_at_and_resumes_exactly(tmp_path, straight, monkeypatch):
  real, calls, handler = trainer.train_step_jit, [], signal.getsignal(signal.SIGTERM)

  def preempted_during_the_first_step(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      signal.raise_signal(signal.SIGTERM)  # as a scheduler's preemption notice would arrive
    return real(*args, **kwargs)

  monkeypatch.setattr(trainer, "train_step_jit", preempted_during_the_first_step)
  out = train(_config(steps=4), str(tmp_path / "b"))
  assert out["stopped_by"] == "SIGTERM" and out["step"] == 1 and len(calls) == 1
  assert _saved_steps(tmp_path / "b") == [1]     # 1 is not a multiple of save_every
  assert signal.getsignal(signal.SIGTERM) == handler  # the run's handler is gone again
  monkeypatch.undo()
  resumed = train(_config(steps=4), str(tmp_path / "b"))
  _leaves_equal(resumed["state"].params, straight.params)


def test_non_finite_state_is_never_saved(tmp_path, monkeypatch):
  with pytest.raises(run_config.ConfigError, match="train.lr=nan"):
    train(_config(lr=float("nan")), str(tmp_path / "nan"))
  assert not os.path.exists(tmp_path / "nan" / "checkpoints")
  for bad in (dict(batch_size=0), dict(save_every=0), dict(batch_size=3, accum=2)):
    with pytest.raises(run_config.ConfigError):
      train(_config(**bad), str(tmp_path / "bad"))

  real = optim.make

  def poisoned(*args, **kwargs):  # updates turn NaN from the third step on
    opt, sched = real(*args, **kwargs)
    return optax.chain(opt, optax.scale_by_schedule(lambda n: jnp.where(n >= 2, jnp.nan, 1.0))), sched

  monkeypatch.setattr(trainer.optim, "make", poisoned)
  wd = tmp_path / "w"
  with pytest.raises(NonFiniteLossError, match=r"step 3: .*NaN.*last saved checkpoint \(step 2\)"):
    train(_config(steps=4, save_every=1), str(wd))
  assert _saved_steps(wd) == [1, 2]
  params = lsj.SkillCompiler.load(str(wd), backbone=lsj.backbone_from_config(_config())).params
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


_KILLED_SAVE = textwrap.dedent("""
    import json, os, sys, time
    import orbax.checkpoint as ocp
    from configs import stage1_tiny
    from lskill_jax.training.trainer import train

    handler = ocp.JsonCheckpointHandler
    real = handler._save_fn

    async def hang_at_step_4(self, x, directory):
      await real(self, x, directory)
      if x["step"] == 4:  # the iterator state is written, the step is not finalised yet
        open(sys.argv[2], "w").close()
        time.sleep(600)

    handler._save_fn = hang_at_step_4
    c = stage1_tiny.get_config()
    c.train.update(json.loads(sys.argv[3]))
    train(c, sys.argv[1])
""")


def test_sigkill_during_a_checkpoint_save_resumes_exactly(tmp_path, straight):
  overrides = dict(steps=4, batch_size=2, accum=1, log_every=1, eval_every=0, save_every=2,
                   async_checkpointing=False)
  c = _config(**overrides)
  wd, marker = tmp_path / "killed", tmp_path / "saving"
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(wd), str(marker), json.dumps(overrides)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 300
    while not marker.exists():
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      assert time.time() < deadline, "the child never reached the save of step 4"
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert _saved_steps(wd) == [2]
  assert any(".orbax-checkpoint-tmp" in n for n in os.listdir(wd / "checkpoints"))
  resumed = train(c, str(wd))
  assert resumed["step"] == 4
  _leaves_equal(resumed["state"].params, straight.params)
  _leaves_equal(resumed["state"].opt_state, straight.opt_state)


# ----------------------------------------------------------------------------- launchers


def test_a_partial_metrics_line_is_kept_apart_and_skipped(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 1, "kind": "train", "loss": 3.0}\n{"step": 2, "kind": "train", "lo')  # killed
  writer = trainer.MetricsWriter(str(tmp_path))  # the resumed run appends
  writer.write(2, "train", {"loss": 2.5})
  writer.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert lines[1].endswith('"lo') and json.loads(lines[2])["loss"] == 2.5
  out = subprocess.run([sys.executable, "-m", "launch.plot_metrics", f"--workdir={tmp_path}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "skipped 1 unreadable line(s) (2)" in out.stderr
  assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"




@pytest.mark.parametrize("args, match", [
    (["launch.train", "--config=configs/stage1_tiny.py", "--workdir={w}", "--config.train.stepz=3"],
     r"--config.train.stepz: the config has no field 'stepz'. Did you mean \"steps\""),
    (["launch.train", "--config=configs/stage1_tiny.py", "--workdir={w}", "--config.train.batch_size=0"],
     "train.batch_size=0 must be a positive integer"),
    (["launch.train", "--config=configs/stage1_tiny.py", "--workdir={w}", "--config.train.lr=nan"],
     "train.lr=nan must be a finite number"),
    (["launch.generate", "--max_new_tokens=0"], "--max_new_tokens=0: 0 is not a positive integer"),
    (["launch.generate", "--skill=skills/alfworld/heat/task.md", "--adapter={w}"], "not both"),
    (["launch.compile", "--config=configs/tiny.py", "--skill=skills", "--out={w}/out"],
     "no trained compiler ships for backbone"),
    (["launch.compile", "--compiler=configs/tiny.py", "--skill=skills", "--out={w}", "--batch_size=0"],
     "--batch_size=0"),
    (["launch.compile", "--compiler=configs/tiny.py", "--skill=skills", "--out={w}/file/out"],
     "--out=.*cannot write there"),
    (["launch.plot_metrics", "--workdir={w}/none"], "No such file or directory"),
])
def test_launchers_report_expected_errors_in_one_line(tmp_path, args, match):
  (tmp_path / "file").write_text("")
  args = [a.format(w=tmp_path) for a in args]
  out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and re.search(match, last), last
