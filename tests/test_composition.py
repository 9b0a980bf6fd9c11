"""Skill composition: full-adapter sums, concatenated texts, component merging (ΔW checks)."""

import hashlib
import os

import jax
import numpy as np
import pytest

import lskill_jax as lsj
from configs import tiny
from lskill_jax.agents import skills as skill_files
from lskill_jax.compiler import composition
from lskill_jax.data.documents import join_components

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERAL = "## General\n\nOpen closed things before looking inside them."
LOOK = {"general": GENERAL, "task": "## Task-specific\n\nHold the object, then use the lamp.",
        "mistakes": "## Mistakes to avoid\n\n- Examining the lamp instead of using it."}
PICK = {"general": GENERAL + "\n", "task": "## Task-specific\n\nTake the object to its place.",
        "mistakes": "## Mistakes to avoid\n\n- Carrying two objects at once."}


@pytest.fixture(scope="module")
def cfg():
  return lsj.backbone_from_config(tiny.get_config()).config


class FakeCompiler:
  """A random adapter per text (seeded by the text), recording every text it compiles."""

  def __init__(self, cfg, rank=2, scale=0.7):
    self.cfg, self.rank, self.scale, self.texts, self.calls = cfg, rank, scale, [], 0

  def adapter(self, text):
    rng = np.random.RandomState(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
    shapes, L = self.cfg.projection_shapes(), self.cfg.num_layers
    return lsj.Adapter.from_factors(
        {t: rng.randn(L, shapes[t][0], self.rank).astype(np.float32) for t in shapes},
        {t: rng.randn(L, self.rank, shapes[t][1]).astype(np.float32) for t in shapes},
        self.scale, base_fingerprint=lsj.adapter.base_fingerprint(self.cfg))

  def __call__(self, texts):
    self.calls += 1
    self.texts.extend(texts)
    return [self.adapter(t) for t in texts]


def _dense(ad):
  return {(t, l): ad.delta(t, l) for t in ad.targets for l in range(ad.num_layers)}


def _assert_delta(ad, parts):
  """ad's ΔW equals Σ w · ΔW(adapter) over (weight, adapter) parts, every target and layer."""
  got = _dense(ad)
  for key, value in got.items():
    want = sum(w * _dense(p)[key] for w, p in parts)
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)


def test_sum_full_is_the_sum_of_full_skill_deltas(cfg):
  fake = FakeCompiler(cfg)
  ad = composition.sum_full(fake, {"look": LOOK, "pick": PICK}, weights={"pick": 0.5})
  assert fake.calls == 1 and fake.texts == [join_components(LOOK), join_components(PICK)]
  _assert_delta(ad, [(1.0, fake.adapter(join_components(LOOK))),
                     (0.5, fake.adapter(join_components(PICK)))])
  assert ad.rank == 2 * fake.rank


def test_concatenated_compiles_one_text(cfg):
  fake = FakeCompiler(cfg)
  ad = composition.concatenated(fake, {"look": LOOK, "pick": PICK})
  assert fake.texts == [join_components(LOOK) + "\n\n" + join_components(PICK)]
  _assert_delta(ad, [(1.0, fake.adapter(fake.texts[0]))])


def test_component_merge_adds_the_shared_general_once(cfg):
  fake = FakeCompiler(cfg)
  weights = {"task": 0.8, "mistakes/pick": 0.3}
  ad = composition.component_merge(fake, {"look": LOOK, "pick": PICK}, weights)
  assert fake.calls == 1 and len(fake.texts) == 5
  assert fake.texts.count(GENERAL) == 1  # PICK's general differs only by white space
  parts = [(1.0, GENERAL), (0.8, LOOK["task"]), (1.0, LOOK["mistakes"]), (0.8, PICK["task"]),
           (0.3, PICK["mistakes"])]
  _assert_delta(ad, [(w, fake.adapter(t)) for w, t in parts])
  plan = composition.merge_plan({"look": LOOK, "pick": PICK}, weights)
  assert plan[0].owners == (("look", "general"), ("pick", "general"))
  # compose dispatches to the same function.
  same = composition.compose("component_merge", fake, {"look": LOOK, "pick": PICK}, weights)
  _assert_delta(same, [(1.0, ad)])


def test_component_merge_refuses_ambiguous_or_unknown_weights(cfg):
  fake = FakeCompiler(cfg)
  with pytest.raises(ValueError, match="shared component is added once"):
    composition.component_merge(fake, {"look": LOOK, "pick": PICK}, {"general/look": 0.5})
  with pytest.raises(ValueError, match="unknown component weight"):
    composition.component_merge(fake, {"look": LOOK}, {"tasks": 0.5})
  with pytest.raises(ValueError, match="lacks the component"):
    composition.sum_full(fake, {"look": {"general": GENERAL}})
  with pytest.raises(ValueError, match="Unknown composition method"):
    composition.compose("average", fake, {"look": LOOK})
  assert fake.calls == 0


def test_shipped_skills_share_their_general_component():
  root = os.path.join(REPO, "skills", "alfworld")
  parts = {n: skill_files.load_components(root, n) for n in ("look", "pick")}
  plan = composition.merge_plan(parts)
  assert len(plan) == 5 and len(plan[0].owners) == 2


def test_component_merge_with_the_tiny_compiler():
  c = tiny.get_config()
  comp = lsj.SkillCompiler.create(lsj.backbone_from_config(c), c, seed=0)
  # A fresh compiler has zero-initialised pieces; perturb every parameter so ΔW is not 0.
  leaves, treedef = jax.tree.flatten(comp.params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  comp = lsj.SkillCompiler(comp.backbone, comp.spec, jax.tree.unflatten(
      treedef, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]))
  skills = {"look": LOOK, "pick": PICK}
  merged = composition.component_merge(comp.compile, skills)
  # The same batch as the merge compiled, so one jitted program serves both (rows of a batch
  # are independent; test_compiler checks that).
  singles = comp.compile([t.text for t in composition.merge_plan(skills)])
  _assert_delta(merged, [(1.0, s) for s in singles])
  assert np.abs(_dense(merged)[("q", 0)]).max() > 0
