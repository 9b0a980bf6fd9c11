"""Skill variants for the robustness protocol: determinism, what each perturbs, loading."""

import os
import re

import pytest

from lskill_jax.agents import skills, variants
from lskill_jax.data.documents import join_components

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKILLS = os.path.join(REPO, "skills")
SEEDED = ("noisy", "reordered", "paraphrased")


def _body(env, name):
  return skills.load_skill(os.path.join(SKILLS, env), name).text


def _words(text):
  return re.findall(r"[a-z]{4,}", text.lower())


@pytest.fixture(params=[("alfworld", "look"), ("searchqa", "multi_hop")], ids=lambda p: p[1])
def body(request):
  return _body(*request.param)


@pytest.mark.parametrize("name", variants.VARIANTS)
def test_deterministic_and_different(body, name):
  out = variants.variant(name, body, seed=3)
  assert out == variants.variant(name, body, seed=3)
  assert out != body
  if name in SEEDED:
    assert variants.variant(name, body, seed=4) != out


@pytest.mark.parametrize("name", ["noisy", "paraphrased"])
def test_content_words_mostly_survive(body, name):
  original = _words(body)
  kept = set(_words(variants.variant(name, body, seed=0)))
  share = sum(w in kept for w in original) / len(original)
  assert 0.8 < share < 1.0, share


def test_noisy_rate_and_structure(body):
  assert variants.noisy(body, rate=0.0) == body
  out = variants.noisy(body, seed=1, rate=0.3)
  assert len(out.splitlines()) == len(body.splitlines())
  # Headings and protocol tags stay intact, so the variant still has the skill's shape.
  assert re.findall(r"^#+ .*$", out, re.M) == re.findall(r"^#+ .*$", body, re.M)
  assert re.findall(r"</?\w+>", out) == re.findall(r"</?\w+>", body)
  # A typo keeps every word a word, so the words still line up one to one.
  before, after = re.findall(r"[A-Za-z]+", body), re.findall(r"[A-Za-z]+", out)
  assert len(before) == len(after)
  long_words = sum(len(w) >= 4 for w in before)
  assert 0.2 < sum(a != b for a, b in zip(before, after)) / long_words < 0.4


def test_reordered_is_a_permutation(body):
  out = variants.reordered(body, seed=0)

  def items(text):  # every non-blank line, list numbers removed
    return sorted(re.sub(r"^\d+\. ", "", l) for l in text.splitlines() if l.strip())
  assert items(out) == items(body)
  sections = variants.split_sections(body)
  assert sorted(s.splitlines()[0] for s in variants.split_sections(out)) == \
      sorted(s.splitlines()[0] for s in sections)
  numbers = [int(m) for m in re.findall(r"^(\d+)\. ", out, re.M)]
  assert numbers == list(range(1, len(numbers) + 1))  # renumbered, still counting up


def test_plain_text_has_no_markdown(body):
  out = variants.plain_text(body)
  for line in out.splitlines():
    assert not re.match(r"\s*(#|[-*+] |\d+[.)] |>)", line), line
  assert "`" not in out and "**" not in out and "__" not in out
  # The words are all still there (front matter aside), only the markup has gone.
  assert set(_words(out)) == set(_words(body))


def test_plain_text_turns_front_matter_into_a_sentence():
  with open(os.path.join(SKILLS, "alfworld", "look", "SKILL.md"), encoding="utf-8") as f:
    out = variants.plain_text(f.read())
  assert out.startswith("Pick up the requested object")
  assert "---" not in out and "task_type" not in out


def test_paraphrase_rewrites():
  out = variants.paraphrased("## Steps\n\n- Use the `find X` command. Never guess.\n"
                             "Visit each receptacle once; the object is usually there.", rate=1.0)
  assert out == ("## Steps\n\n- You should use the `find X` command. You should never guess.\n"
                 "You should visit each container once; the item is typically there.") or \
      out.endswith("the item is normally there.")


@pytest.mark.parametrize("name", variants.VARIANTS)
def test_shared_general_component_stays_shared(name):
  general = skills.load_components(os.path.join(SKILLS, "alfworld"), "look")["general"]
  shared = variants.variant(name, general, 0)
  for skill in ("look", "pick", "heat"):
    assert shared in variants.variant(name, _body("alfworld", skill), 0)


def test_written_variants_load(tmp_path):
  written = variants.write_variants(str(tmp_path), SKILLS, "searchqa", seed=0)
  assert sorted(written) == sorted(variants.VARIANTS)
  originals = skills.load_skills(os.path.join(SKILLS, "searchqa"), "searchqa")
  for name, skill_dir in written.items():
    assert skill_dir == os.path.join(str(tmp_path), name, "searchqa")
    loaded = skills.load_skills(skill_dir, "searchqa")
    assert sorted(loaded) == sorted(originals)
    for skill, doc in loaded.items():
      assert doc.text == variants.variant(name, originals[skill].text, 0)
      parts = skills.load_components(skill_dir, skill)
      if name == "reordered":
        assert sorted(variants.split_sections(doc.text)) == sorted(parts.values())
      else:
        assert doc.text == join_components(parts)
  with pytest.raises(ValueError, match="Unknown skill variant"):
    variants.write_variants(str(tmp_path), SKILLS, "searchqa", variants=["shuffled"])
