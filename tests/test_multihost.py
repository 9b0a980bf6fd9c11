"""Multi-host, simulated: two JAX processes on this machine (2 CPU devices each) joined by
jax.distributed stand in for two hosts of a pod slice.

They run the launch scripts unchanged with --distributed: Stage 1 on a data x fsdp mesh over
both processes (each process reading its own rows of every batch, both writing the Orbax
checkpoint), stopped after step 2 and resumed, then a compile of a batch of skills. The
results must equal one process doing the same on the same mesh shape: the same batches in the
same order, losses and params within 1e-6, the same adapters.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import lskill_jax as lsj
from configs import stage1_tiny, tiny
from lskill_jax.data import pipeline
from lskill_jax.data.stage1 import Stage1Options
from lskill_jax.training.trainer import train
from lskill_jax.training.validation import evaluate_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES, DEVICES_EACH = 2, 2
TIMEOUT_S = 1800  # a hung collective fails the test instead of blocking the suite

# Small enough to compile and run in seconds; accum=2 splits each step's global batch of 4
# into micro-batches that cut across the processes' rows.
OVERRIDES = {"data.seq_len": 256, "data.context_len": 256, "compiler.context_len": 256,
             "train.steps": 4, "train.batch_size": 4, "train.accum": 2, "train.loss_chunk": 256,
             "train.log_every": 1, "train.save_every": 2, "train.eval_every": 0}
SKILLS = {"heat.md": "# Heat\nTake the mug to the microwave, heat it, then put it on the table.",
          "cool.md": "# Cool\nPut the apple in the fridge, close it, wait, then take it out.",
          "look.md": "# Look\nFind the desk lamp, switch it on and examine the book under it."}


def _documents(n: int = 24) -> list[str]:
  """Short skill-like documents (a few dozen tokens each), all different."""
  verbs = ("open", "clean", "heat", "cool", "check", "move")
  things = ("the drawer", "a mug", "the lamp", "an apple", "the shelf", "a towel", "the safe")
  return [f"# Skill {i}\nFirst {verbs[i % 6]} {things[i % 7]}, then {verbs[(i + 2) % 6]} "
          f"{things[(i + 3) % 7]}. If it fails, {verbs[(i + 4) % 6]} {things[(i + 5) % 7]} "
          f"and try again; stop after {i % 4 + 2} attempts." for i in range(n)]


def _overrides(corpus: str) -> dict:
  return {**OVERRIDES, "data.train": corpus}


def _config(corpus: str):
  c = stage1_tiny.get_config()
  for key, value in _overrides(corpus).items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _on_all_hosts(module: str, *args: str, cache: str, per_process=lambda i: ()) -> list[str]:
  """Runs `python -m module args` as PROCESSES processes of one JAX job; returns their logs.

  cache: a compilation cache shared by the jobs (the resumed run reuses the first's programs).
  """
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_EACH}",
         "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  procs = [subprocess.Popen(
      [sys.executable, "-m", module, "--distributed", f"--coordinator_address=localhost:{port}",
       f"--num_processes={PROCESSES}", f"--process_id={i}", *args, *per_process(i)],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(PROCESSES)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=TIMEOUT_S)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f"process {i} of {module} exited with {p.returncode}:\n{log[-4000:]}"
  return logs


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == "train"]


def _reference_mesh():
  """One process, the same mesh shape over 4 of its devices (ordered as the two processes' are)."""
  return lsj.make_mesh(data=2, fsdp=2, devices=jax.devices()[:PROCESSES * DEVICES_EACH])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(single-process workdir and result, two-process workdir): the same 4-step Stage 1 run."""
  if jax.device_count() < PROCESSES * DEVICES_EACH:
    pytest.skip(f"the single-process reference needs {PROCESSES * DEVICES_EACH} devices")
  tmp = tmp_path_factory.mktemp("multihost")
  corpus, one, two = str(tmp / "train.jsonl"), str(tmp / "one"), str(tmp / "two")
  with open(corpus, "w") as f:
    f.writelines(json.dumps({"text": t}) + "\n" for t in _documents())
  single = train(_config(corpus), one, mesh=_reference_mesh())
  flags_ = ["--config=configs/stage1_tiny.py", f"--workdir={two}", "--mesh=data=2,fsdp=2",
            *[f"--config.{k}={v}" for k, v in _overrides(corpus).items()]]
  cache = str(tmp / "xla_cache")
  _on_all_hosts("launch.train", *flags_, "--stop_after=2", cache=cache)  # "preempted" after step 2
  _on_all_hosts("launch.train", *flags_, cache=cache)                    # the same command resumes
  return one, single, two, corpus, cache


def test_process_rows_make_the_single_process_batches():
  # What each process reads, put side by side, is the batch one process reads: same
  # examples, same row order (the per-example randomness goes by global position).
  c = stage1_tiny.get_config()
  tok = lsj.backbone_from_config(tiny.get_config()).tokenizer
  texts = _documents(12)
  opts = Stage1Options(seq_len=c.data.seq_len, context_len=c.data.context_len)
  whole = pipeline.stage1_dataset(tok, texts, opts, batch_size=4)
  for split in (((0,), (1, 2, 3)), ((0, 2), (1, 3))):  # blocks, or rows interleaved by the mesh
    parts = [pipeline.stage1_dataset(tok, texts, opts, batch_size=4, rows=rows) for rows in split]
    order = np.argsort(np.concatenate(split))
    for k in range(3):
      for key, value in whole[k].items():
        np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts])[order], value,
                                      err_msg=key)
  with pytest.raises(ValueError, match=r"rows \(2, 4\) are not increasing row indices of a batch of 4"):
    pipeline.stage1_dataset(tok, texts, opts, batch_size=4, rows=(2, 4))


def test_two_processes_train_resume_and_match_one(runs):
  one, single, two, corpus, _ = runs
  a, b = _metrics(one), _metrics(two)
  assert [r["step"] for r in b] == [1, 2, 3, 4]  # two runs: steps 1-2, then 3-4 resumed
  # The same data in the same order: the global batch's target-token count at every step.
  assert [r["target_tokens"] for r in b] == [r["target_tokens"] for r in a]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
  assert all(r["skipped"] == 0 for r in b)
  # The checkpoint both processes wrote, read back here, is the single-process run's state.
  backbone = lsj.backbone_from_config(_config(corpus))
  resumed = lsj.SkillCompiler.load(two, backbone)
  flat = jax.tree.leaves_with_path(single["state"].params)
  assert len(flat) == len(jax.tree.leaves(resumed.params))
  for (path, x), y in zip(flat, jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  with open(os.path.join(two, "config.json")) as f:
    assert json.load(f)["train"]["batch_size"] == 4  # the global batch, as in one process


def test_two_processes_compile_a_batch_of_skills_like_one(runs, tmp_path):
  two, cache = runs[2], runs[4]
  skills = tmp_path / "skills"
  skills.mkdir()
  for name, text in SKILLS.items():
    (skills / name).write_text(text)
  # The batch of 3 skills (padded to 4 rows) is split over the 4 devices of both processes;
  # each process writes every adapter (here into its own folder).
  _on_all_hosts("launch.compile", f"--compiler={two}", "--config=configs/tiny.py",
                f"--skill={skills}", "--batch_size=4", "--mesh=data=4", cache=cache,
                per_process=lambda i: (f"--out={tmp_path / f'out{i}'}",))
  backbone = lsj.backbone_from_config(tiny.get_config())
  comp = lsj.SkillCompiler.load(two, backbone)
  expected = comp.compile([(skills / n).read_text() for n in SKILLS], batch_size=4)
  for i in range(PROCESSES):
    for name, want in zip(SKILLS, expected):
      got = lsj.Adapter.load(str(tmp_path / f"out{i}" / name[:-3]), backbone=backbone)
      # The reference compiles on one device: XLA sums in another order than on the 4-device
      # mesh, which moves entries near zero by ~1e-6 in fp32.
      for t in want.a:
        np.testing.assert_allclose(np.asarray(got.a[t]), np.asarray(want.a[t]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got.b[t]), np.asarray(want.b[t]), rtol=1e-5, atol=1e-5)


def test_two_processes_validate_and_compile_with_params_split_over_hosts(runs, tmp_path):
  # fsdp over all 4 devices splits the compiler's params and every batch's rows between the
  # two processes: validation gathers the per-document losses, the compiler's content hash
  # (the compiler id in an adapter's metadata) gathers the params.
  two, cache = runs[2], runs[4]
  _on_all_hosts("launch.validate", f"--workdir={two}", "--split=train", "--docs=4",
                "--mesh=fsdp=4", cache=cache,
                per_process=lambda i: (f"--out={tmp_path / f'val{i}.json'}",))
  with open(os.path.join(two, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  mesh = lsj.make_mesh(data=1, fsdp=4, devices=jax.devices()[:PROCESSES * DEVICES_EACH])
  want = evaluate_checkpoint(config, two, splits=("train",), docs=4, mesh=mesh)["train"]
  for i in range(PROCESSES):
    with open(tmp_path / f"val{i}.json") as f:
      got = json.load(f)["train"]
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-5,
                               atol=1e-5)
  skills = tmp_path / "skills"
  skills.mkdir()
  (skills / "heat.md").write_text(SKILLS["heat.md"])
  _on_all_hosts("launch.compile", f"--compiler={two}", "--config=configs/tiny.py",
                f"--skill={skills}", "--mesh=fsdp=4", cache=cache,
                per_process=lambda i: (f"--out={tmp_path / f'out{i}'}",))
  backbone = lsj.backbone_from_config(tiny.get_config())
  comp_id = lsj.SkillCompiler.load(two, backbone).checkpoint_id
  for i in range(PROCESSES):
    got = lsj.Adapter.load(str(tmp_path / f"out{i}" / "heat"), backbone=backbone)
    assert got.metadata["compiler_id"] == comp_id
