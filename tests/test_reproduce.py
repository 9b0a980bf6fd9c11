"""The reproduction: the tiny scale end to end, a rerun that skips finished stages, bad flags,
the stage runner's markers, Wilson intervals, the reading, and the plain-LoRA baseline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

pytest.importorskip("alfworld.agents.environment.alfred_tw_env",
                    reason="needs `pip install alfworld==0.4.2`")

from lskill_jax import reproduce  # noqa: E402
from lskill_jax.envs import alfworld as aw  # noqa: E402
from lskill_jax.reproduce import pipeline, report, stages  # noqa: E402
from launch.reproduce import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_official_data(monkeypatch):
  monkeypatch.delenv(aw.ALFWORLD_DATA_VAR, raising=False)


def _mtimes(out):
  return {s: os.path.getmtime(stages.marker_path(out, s)) for s in reproduce.STAGE_NAMES}


def test_tiny_scale_end_to_end_then_a_rerun_skips_it(tmp_path):
  out = str(tmp_path / "run")
  config = load_config("tiny")
  ran = reproduce.run(out, config, command="python -m launch.reproduce --scale=tiny",
                      show_progress=False)
  assert ran == list(reproduce.STAGE_NAMES)
  text = open(os.path.join(out, "report.md"), encoding="utf-8").read()
  for heading in ("## Reading", "## Agents and controls", "### ALFWorld, seen (valid_seen)",
                  "### ALFWorld, unseen (valid_unseen)", "### Search-QA (test)",
                  "## α sweep", "## Composition", "## Geometry of compiled adapters",
                  "## Robustness to the skill's wording", "## Exposure (extraction prompts)",
                  "## Run", "Scale: **tiny**"):
    assert heading in text, heading
  for cond in ("vanilla", "fewshot", "incontext", "latent", "latent_other_skill",
               "latent_nonsense", "latent_empty", "plain_lora", "component_merge"):
    assert f"| {cond} |" in text, cond
  assert "does latent beat in-context with fewer prefill tokens?" in text
  assert "Does latent beat its own controls?" in text
  for png in ("alpha/alpha.png", "geometry/geometry.png"):
    assert f"]({png})" in text
    assert open(os.path.join(out, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # Each skill compiles to its own adapter (the skills share their opening section, so a
  # compiler that read only their first tokens would give them one).
  geo = json.load(open(os.path.join(out, "geometry", "results.json")))
  assert geo["to_same_env_skills"] > 0 and geo["to_own_variants"] > 0
  # Every stage left its marker; a rerun runs nothing and rewrites none of them.
  before = _mtimes(out)
  assert reproduce.run(out, config, show_progress=False) == []
  assert _mtimes(out) == before
  # A stage whose marker is gone runs again (its evaluations come back from episodes.jsonl,
  # so no episode is played twice), and the report is written again after it.
  episodes = os.path.join(out, "alpha", "searchqa", "alpha_0", "episodes.jsonl")
  lines = open(episodes).read()
  os.remove(stages.marker_path(out, "alpha"))
  assert reproduce.run(out, config, show_progress=False) == ["alpha", "report"]
  assert open(episodes).read() == lines
  # Another config in the same folder is refused before anything runs.
  other = load_config("tiny")
  other.alphas = (0.5,)
  with pytest.raises(reproduce.ReproduceError, match="another config"):
    reproduce.run(out, other, show_progress=False)


def test_a_training_field_added_since_the_run_does_not_block_its_resume():
  # A run recorded before a training field existed used that field's default.
  now = json.loads(load_config("tiny").to_json_best_effort())
  before = json.loads(json.dumps(now))
  del before["stage2"]["train"]["frozen"]
  assert reproduce.config_differences(before, now) == []
  now["stage2"]["train"]["frozen"] = ["metalora"]
  now["alphas"] = [0.5]
  assert reproduce.config_differences(before, now) == ["alphas", "stage2.train.frozen"]


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.reproduce", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_bad_flags_are_named(tmp_path):
  proc = _launch(f"--out={tmp_path}", "--scale=huge")
  assert proc.returncode != 0 and "--scale" in proc.stderr and "tiny" in proc.stderr
  proc = _launch(f"--out={tmp_path}", "--scale=tiny", f"--stage1={tmp_path}/missing")
  assert proc.returncode != 0 and "--stage1" in proc.stderr and "no such" in proc.stderr
  assert not os.listdir(tmp_path)


def test_stage_runner_markers_and_order(tmp_path):
  calls = []

  def stage(name, fail=False):
    def fn(ctx, stage_dir):
      calls.append(name)
      if fail:
        raise RuntimeError("interrupted")
      return {"name": name}
    return fn

  out = str(tmp_path)
  with pytest.raises(RuntimeError):
    stages.run_stages(out, [("a", stage("a")), ("b", stage("b", fail=True))], None)
  assert stages.read_marker(out, "a")["summary"] == {"name": "a"}
  assert stages.read_marker(out, "b") is None
  assert stages.run_stages(out, [("a", stage("a")), ("b", stage("b"))], None) == ["b"]
  assert calls == ["a", "b", "b"]
  with pytest.raises(ValueError, match="unknown stage"):
    stages.run_stages(out, [("a", stage("a"))], None, only=["z"])
  with pytest.raises(ValueError, match=r"needs the earlier stage\(s\) \['c'\]"):
    stages.run_stages(out, [("c", stage("c")), ("d", stage("d"))], None, only=["d"])


def test_a_stopped_stage2_is_not_marked_done(tmp_path, monkeypatch):
  # Training saves and returns on SIGTERM; the stage must not record that as finished.
  monkeypatch.setattr(pipeline, "_stage2_config", lambda ctx: ml_collections.ConfigDict({"init_from": ""}))
  monkeypatch.setattr(pipeline, "train", lambda *a, **k: {"step": 3, "stopped_by": "SIGTERM"})
  ctx = types.SimpleNamespace(stage2_dir=str(tmp_path / "stage2" / "workdir"), mesh=None, bb=None)
  with pytest.raises(pipeline.StageStopped, match="step 3; rerun the same command"):
    stages.run_stages(str(tmp_path), [("stage2", pipeline.stage_stage2)], ctx)
  assert stages.read_marker(str(tmp_path), "stage2") is None
  monkeypatch.setattr(pipeline, "train", lambda *a, **k: {"step": 60, "loss": 1.0})
  assert stages.run_stages(str(tmp_path), [("stage2", pipeline.stage_stage2)], ctx) == ["stage2"]
  assert stages.read_marker(str(tmp_path), "stage2")["summary"]["step"] == 60


def test_wilson_interval():
  lo, hi = report.wilson(5, 10)
  assert lo == pytest.approx(23.66, abs=0.01) and hi == pytest.approx(76.34, abs=0.01)
  assert report.wilson(0, 0) is None
  lo, hi = report.wilson(0, 24)
  assert lo == 0 and 0 < hi < 15


def _rep(rates, prefill, n=40, fallbacks=None):
  rows = {m: {"average": {"n": n, "success": r * n / 100, "rate": r}, "by_type": {},
              "prefill_per_step": prefill[m], "decode_per_step": 10, "context_per_step": 0,
              "fallbacks_per_step": (fallbacks or {}).get(m)}
          for m, r in rates.items()}
  return {"tables": {"test": rows}}


def test_reading_is_computed_from_the_numbers():
  agents = {"searchqa": {
      "modes": _rep({"incontext": 20.0, "latent": 60.0}, {"incontext": 900, "latent": 300}),
      "latent_nonsense": _rep({"latent": 65.0}, {"latent": 300}),
  }}
  lines = "\n".join(report.reading(agents))
  assert "fewer prefill tokens? yes" in lines and "clearly beats in-context" in lines
  assert "no: beats 0 of 1" in lines and "does not beat latent_nonsense" in lines
  assert "all its controls in 0 of 1" in lines and "does not come from the skill's content" in lines


def test_usable_actions_are_read_and_tabled_when_no_episode_succeeds():
  agents = {"alfworld": {
      "modes": _rep({"incontext": 0.0, "latent": 0.0}, {"incontext": 900, "latent": 300},
                    fallbacks={"incontext": 1.0, "latent": 0.25}),
      "latent_empty": _rep({"latent": 0.0}, {"latent": 300}, fallbacks={"latent": 0.5}),
  }}
  lines = "\n".join(report.reading(agents))
  assert "usable action: latent 75.0, incontext 0.0, latent_empty 50.0." in lines
  table = report.comparison_table("alfworld", report._rows(agents["alfworld"], "test"), "test")
  assert "Valid action %" in table.splitlines()[0]
  assert table.splitlines()[2].split("|")[-2].strip() == "0.0"  # in-context: every step fell back


def test_plain_lora_loss_falls():
  import lskill_jax as lsj
  from configs import tiny
  from lskill_jax.training import plain_lora
  bb = lsj.backbone_from_config(tiny.get_config())
  toks = np.random.default_rng(0).integers(0, 1000, (2, 32))
  batch = {"tokens": toks, "segment_ids": np.ones((2, 32), np.int32),
           "weights": np.ones((2, 32), np.float32)}
  adapter, losses = plain_lora.train(bb, iter([batch] * 6), rank=2, targets=("o", "down"),
                                     steps=6, lr=1e-2)
  assert losses[-1] < losses[0] - 0.05
  assert adapter.targets == ("o", "down") and adapter.rank == 2


class _ListBatches:
  """Batches from a list, with the position get_state/set_state of pipeline.Batches; sends
  this process SIGTERM when handing out batch `kill_at` (0-based), if given."""

  def __init__(self, batches, kill_at=None):
    self.batches, self.i, self.kill_at = batches, 0, kill_at

  def __next__(self):
    if self.i == self.kill_at:
      os.kill(os.getpid(), signal.SIGTERM)
    self.i += 1
    return self.batches[self.i - 1]

  def get_state(self):
    return {"i": self.i}

  def set_state(self, state):
    self.i = state["i"]


def test_plain_lora_stopped_by_sigterm_resumes_where_it_stopped(tmp_path):
  import lskill_jax as lsj
  from configs import tiny
  from lskill_jax.training import plain_lora
  bb = lsj.backbone_from_config(tiny.get_config())
  rng = np.random.default_rng(0)
  batches = [{"tokens": rng.integers(0, 1000, (2, 16)), "segment_ids": np.ones((2, 16), np.int32),
              "weights": np.ones((2, 16), np.float32)} for _ in range(5)]
  kw = dict(rank=2, targets=("o", "down"), steps=5, lr=1e-2, show_progress=False)
  whole, whole_losses = plain_lora.train(bb, _ListBatches(batches), **kw)
  work = str(tmp_path / "work")
  with pytest.raises(plain_lora.TrainingStopped, match="SIGTERM after saving step 3"):
    plain_lora.train(bb, _ListBatches(batches, kill_at=2), workdir=work, save_every=10, **kw)
  resumed, losses = plain_lora.train(bb, _ListBatches(batches), workdir=work, **kw)
  # The rerun read batches 4 and 5 only, and ended where the uninterrupted run did.
  np.testing.assert_allclose(losses, whole_losses, rtol=1e-6)
  for t in ("o", "down"):
    np.testing.assert_allclose(resumed.b[t], whole.b[t], rtol=1e-5, atol=1e-7)
  steps = [json.loads(line)["step"] for line in open(os.path.join(work, "metrics.jsonl"))]
  assert steps == [1, 2, 3, 4, 5]
