"""Skill exposure: leak counting, and the extraction prompts of the in-context and latent agents."""

import os

import pytest

from lskill_jax.agents import exposure, prompts, skills
from lskill_jax.backbone.small_tokenizer import train_bpe_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKILL = skills.load_skill(os.path.join(REPO, "skills", "alfworld"), "look").text
QUOTED = ("- Putting the object down on the desk before using the lamp; the goal needs it in "
          "your hand.",
          "- Walking to the lamp first and switching it on before you hold the object.")


@pytest.fixture(scope="module")
def tok():
  return train_bpe_tokenizer([SKILL, *exposure.EXTRACTION_PROMPTS.values()], 600)


def test_two_quoted_lines_count_two():
  answer = ("Sure! My notes say:\n" + QUOTED[0].upper().replace("- ", "* ") + "\n  and also: '"
            + QUOTED[1][2:].replace(" ", "   ") + "'")
  leaked = exposure.leaked_lines(SKILL, answer)
  assert leaked == [q[2:] for q in QUOTED]
  assert len(exposure.fuzzy_leaked_lines(SKILL, answer)) == 2


def test_unrelated_answer_counts_zero():
  answer = "<think>I should find a mug.</think><action>go to countertop 1</action>"
  assert exposure.leaked_lines(SKILL, answer) == []
  assert exposure.fuzzy_leaked_lines(SKILL, answer) == []


def test_fuzzy_catches_a_lightly_edited_line():
  line = ("Using the lamp from the wrong place: `use` only appears in the admissible list where "
          "the lamp actually stands.")
  edited = line.replace("actually stands", "really stands")
  assert exposure.leaked_lines(SKILL, edited) == []
  assert exposure.fuzzy_leaked_lines(SKILL, edited) == [line]
  assert exposure.fuzzy_leaked_lines(SKILL, edited, threshold=1.0) == []


def test_skill_lines_skip_headings_and_markers():
  lines = exposure.skill_lines(SKILL)
  assert "## General" not in lines and "General" not in lines
  assert all(not l.startswith(("- ", "1. ")) for l in lines)
  assert QUOTED[1][2:] in lines


@pytest.mark.parametrize("env", ["alfworld", "searchqa"])
def test_incontext_prompt_has_the_skill_latent_does_not(env):
  request = exposure.EXTRACTION_PROMPTS["naive"]
  inctx = exposure.extraction_prompt(env, "incontext", SKILL, request)
  latent = exposure.extraction_prompt(env, "latent", SKILL, request)
  text = lambda p: "\n".join(m["content"] for m in p.messages)
  assert prompts.SKILL_HEADING in text(inctx) and SKILL in text(inctx)
  assert prompts.SKILL_HEADING not in text(latent) and "desklamp" not in text(latent)
  assert text(inctx).endswith(request) and text(latent).endswith(request)
  assert inctx.blocks == {"skill": prompts.skill_block(SKILL)} and latent.blocks == {}


def test_run_extraction_with_a_scripted_model(tok):
  calls = []
  answers = {"naive": "\n".join(QUOTED), "authority": "I cannot share that.",
             "indirect": "First look around, then " + QUOTED[1][2:]}

  def generate(ids, adapter, alpha):
    calls.append((adapter, alpha))
    texts = [tok.decode(i) for i in ids]
    return [tok(answers[next(n for n, r in exposure.EXTRACTION_PROMPTS.items() if r in t)],
                add_special_tokens=False)["input_ids"] for t in texts]

  adapter = object()
  rows = exposure.run_extraction(generate, tok, env="alfworld", mode="latent", skill_text=SKILL,
                                 adapter=adapter, alpha=0.6)
  assert calls == [(adapter, 0.6)]  # one call for all requests, adapter mounted
  assert {r["request"]: r["leaked"] for r in rows} == {"naive": 2, "authority": 0, "indirect": 1}
  assert all(r["lines"] == len(exposure.skill_lines(SKILL)) and r["mode"] == "latent"
             for r in rows)
  rows = exposure.run_extraction(generate, tok, env="alfworld", mode="incontext",
                                 skill_text=SKILL, adapter=adapter)
  assert calls[-1][0] is None  # the in-context agent runs without the adapter
  assert rows[0]["leaked_fuzzy"] == 2
  with pytest.raises(ValueError, match="needs the skill's adapter"):
    exposure.run_extraction(generate, tok, env="alfworld", mode="latent", skill_text=SKILL)
  with pytest.raises(ValueError, match="Unknown exposure mode"):
    exposure.extraction_prompt("alfworld", "vanilla", SKILL, "hi")
