"""Agents: prompts, exact token accounting, the batched runner, resume, reports, teacher data."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("alfworld.agents.environment.alfred_tw_env",
                    reason="needs `pip install alfworld==0.4.2`")

import lskill_jax as lsj  # noqa: E402
from conftest import save_tiny_model  # noqa: E402
from configs import eval_alfworld, eval_searchqa  # noqa: E402
from lskill_jax.agents import (accounting, evaluation, prompts, report, results, runner,  # noqa: E402
                               skills, tasks, teacher)
from lskill_jax.agents.episodes import AlfworldEpisode  # noqa: E402
from lskill_jax.data.documents import DocumentError, read_skill  # noqa: E402
from lskill_jax.envs import alfworld as aw  # noqa: E402
from lskill_jax.envs import searchqa as sq  # noqa: E402
from lskill_jax.inference import chat_prompt_ids, generate_ids  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALF_SKILLS = os.path.join(REPO, "skills", "alfworld")
SQA_SKILLS = os.path.join(REPO, "skills", "searchqa")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bb(tmp_path_factory):
  """A one-layer random Qwen3 with the real vocabulary, so the Qwen3 tokenizer is attached."""
  path = tmp_path_factory.mktemp("tiny_qwen3")
  # Agent prompts run to several hundred tokens: the position limit must hold them, since
  # generation refuses a prompt longer than max_position_embeddings.
  save_tiny_model(path, vocab_size=151936, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                  max_position_embeddings=4096)
  backbone = lsj.load_backbone(str(path))
  assert backbone.tokenizer is not None
  return backbone


@pytest.fixture(scope="module")
def tok(bb):
  return bb.tokenizer


@pytest.fixture(scope="module")
def games_root(tmp_path_factory):
  """One pick-and-place game in valid_seen and one in train (for the fewshot demonstration)."""
  root = str(tmp_path_factory.mktemp("alfworld"))
  aw.generate_games(root, {"train": 1, "valid_seen": 1}, seed=0)
  return root


@pytest.fixture(scope="module")
def sqa_dir(tmp_path_factory):
  """A small Search-QA build: the full corpus, 10 questions per skill type."""
  out = str(tmp_path_factory.mktemp("searchqa"))
  facts = sq.load_country_facts()
  sq.save_corpus(os.path.join(out, "corpus.jsonl"), sq.build_corpus(facts))
  for name, recs in sq.build_questions(facts, seed=0, per_type=10, test_fraction=0.3).items():
    sq.save_questions(os.path.join(out, f"{name}.jsonl"), recs)
  return out


@pytest.fixture(autouse=True)
def _no_official_data(monkeypatch):
  monkeypatch.delenv(aw.ALFWORLD_DATA_VAR, raising=False)


def alf_config(root, **overrides):
  c = eval_alfworld.get_config()
  c.data_root, c.prefer_official, c.skill_dir = root, False, ALF_SKILLS
  c.splits, c.max_new_tokens = ("valid_seen",), 4
  c.update(overrides)
  return c


def sqa_config(data_dir, **overrides):
  c = eval_searchqa.get_config()
  c.data_dir, c.skill_dir, c.max_new_tokens = data_dir, SQA_SKILLS, 4
  c.update(overrides)
  return c


def random_compile_fn(cfg, rank=2):
  """Random small adapters for the tiny backbone, one per skill text."""
  shapes = cfg.projection_shapes()

  def compile_fn(texts):
    out = []
    for i, _ in enumerate(texts):
      rng = np.random.RandomState(i)
      a = {t: rng.normal(0, 0.1, (cfg.num_layers, d_in, rank)) for t, (d_in, _) in shapes.items()}
      b = {t: rng.normal(0, 0.1, (cfg.num_layers, rank, d_out)) for t, (_, d_out) in shapes.items()}
      out.append(lsj.Adapter.from_factors(a, b, scale=0.5))
    return out
  return compile_fn


class Spy:
  """Wraps a generate function and remembers every call's prompts and adapter."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, prompts_ids, adapter, alpha):
    self.calls.append(([list(p) for p in prompts_ids], adapter, alpha))
    return self.fn(prompts_ids, adapter, alpha)


def scripted(tok, reply):
  """A generate function whose text for each prompt is reply(prompt text)."""
  def fn(prompts_ids, adapter, alpha):
    return [tok(reply(tok.decode(p)), add_special_tokens=False)["input_ids"] for p in prompts_ids]
  return fn


def runtime(tok, workdir, generate_fn, **kw):
  return evaluation.Runtime(tok, generate_fn, "tiny", str(workdir), show_progress=False, **kw)


# ----------------------------------------------------------------------------- skills, parsing


def test_skill_documents_and_routing(tmp_path):
  (tmp_path / "x").mkdir()
  (tmp_path / "x" / "SKILL.md").write_text("---\nname: x\n---\n\n## Body\ntext\n")
  assert skills.load_skill(str(tmp_path), "x").text == "## Body\ntext"
  (tmp_path / "y.txt").write_text("---\nname: y\n---\n  \n")
  with pytest.raises(DocumentError, match="only front matter"):
    skills.load_skill(str(tmp_path), "y")
  docs = skills.load_skills(ALF_SKILLS, "alfworld")
  assert sorted(docs) == ["clean", "cool", "heat", "look", "pick"]
  # The in-context text is the body the compiler reads: one parser for both.
  assert all(d.text == read_skill(d.path).text for d in docs.values())
  assert all(not d.text.startswith("---") and d.text.startswith("## General") for d in docs.values())
  assert skills.skill_name_for("alfworld", "pick_two_obj_and_place") == "pick"
  assert skills.skill_name_for("searchqa", "multi_hop_reasoning") == "multi_hop"
  assert sorted(skills.load_skills(SQA_SKILLS, "searchqa")) == ["comparison", "direct_retrieval",
                                                                "multi_hop"]
  with pytest.raises(skills.SkillError, match="known types"):
    skills.skill_name_for("alfworld", "juggle")


@pytest.mark.parametrize("output,command,fallback", [
    ("I will go now.", "look", "no_action"),
    ("<think>go</think><action></action>", "look", "no_action"),
    ("<action>fly to the moon</action>", "look", "not_admissible"),
    ("<think>x</think>\n<action>  Go  TO\tCabinet 1 </action>", "go to cabinet 1", None),
    ("<action>look</action> then <action>go to cabinet 1</action>", "go to cabinet 1", None),
    ("<action>look</action><action>go to cabinet 1\nmore text", "go to cabinet 1", None),
])
def test_choose_action(output, command, fallback):
  choice = prompts.choose_action(output, ["look", "go to cabinet 1"])
  assert (choice.command, choice.fallback) == (command, fallback)


# ----------------------------------------------------------------------------- token accounting


def _prompt_pairs():
  """(vanilla, augmented) prompt pairs for every environment, block kind and history state."""
  skill = skills.load_skills(ALF_SKILLS, "alfworld")["clean"].text
  sqa_skill = skills.load_skills(SQA_SKILLS, "searchqa")["multi_hop"].text
  obs = ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. You see a "
         "sinkbasin 1.\n\nYour task is to: put a clean plate in diningtable.")
  task = prompts.task_description(obs)
  history = [(obs, "go to sinkbasin 1"), ("You arrive at sinkbasin 1.", "look")] * 4
  demo = "Task: put a mug in shelf.\n<think>Find it.</think>\n<action>go to shelf 1</action>"
  turns = [("<think>a</think>\n<search>Peru capital</search>",
            "<information>Doc 1 (Title: Peru) Its capital is Lima.</information>")]
  pairs = []
  for h in ([], history):
    args = (task, "You see a plate 1.", ["look", "take plate 1 from sinkbasin 1"], h)
    pairs.append((prompts.alfworld_prompt(*args),
                  prompts.alfworld_prompt(*args, mode="incontext", skill_text=skill)))
    pairs.append((prompts.alfworld_prompt(*args),
                  prompts.alfworld_prompt(*args, mode="fewshot", demo_text=demo)))
  for t in ([], turns):
    pairs.append((prompts.searchqa_prompt("Which is larger?", t),
                  prompts.searchqa_prompt("Which is larger?", t, mode="incontext",
                                          skill_text=sqa_skill)))
  return pairs


def test_prompt_ids_are_the_generate_ids_and_blocks_add_exactly_their_tokens(tok):
  for vanilla, augmented in _prompt_pairs():
    v = accounting.encode_prompt(tok, vanilla.messages, vanilla.blocks)
    a = accounting.encode_prompt(tok, augmented.messages, augmented.blocks)
    # The ids counted are the ids `lsj.generate` would send for the same messages.
    assert list(v.ids) == chat_prompt_ids(tok, list(vanilla.messages))
    assert list(a.ids) == chat_prompt_ids(tok, list(augmented.messages))
    (name, block), = augmented.blocks.items()
    n = a.block_tokens[name]
    assert n > 0 and a.prefill - v.prefill == n
    # Some n consecutive tokens spell the block, and without them the vanilla prompt remains.
    assert any(a.ids[:s] + a.ids[s + n:] == v.ids and tok.decode(a.ids[s:s + n]) == block
               for s in range(len(v.ids) + 1))


def test_history_window_and_observation_cut():
  long_obs = "x" * 1000
  history = [(long_obs, f"go to shelf {i}") for i in range(8)]
  text = prompts.alfworld_prompt("t", "now", ["look"], history).messages[0]["content"]
  assert text.count("[Observation ") == 5 and "Action 5: 'go to shelf 7'" in text
  assert "'" + "x" * 300 + "'" in text and "x" * 301 not in text
  assert "already taken 8 step(s)" in text and "You are now at step 9" in text


# ----------------------------------------------------------------------------- end to end


def test_alfworld_every_mode_end_to_end(bb, tok, games_root, tmp_path):
  spy = Spy(runner.backbone_generate_fn(bb, max_new_tokens=4))
  rt = runtime(tok, tmp_path, spy, compile_fn=random_compile_fn(bb.config), compiler_name="rand",
               alpha=0.7)
  rep = evaluation.evaluate(alf_config(games_root, max_steps=1), list(prompts.MODES), rt)
  recs = {r["mode"]: r for r in results.ResultsLog(str(tmp_path / "episodes.jsonl")).records()}
  assert sorted(recs) == sorted(prompts.MODES)
  sent = [c[0][0] for c in spy.calls]  # one game, one step per mode: one prompt per call
  assert [len(s) for s in sent] == [recs[m]["tokens"]["prefill"][0] for m in prompts.MODES]
  for (ids, adapter, alpha), mode in zip(spy.calls, prompts.MODES):
    assert (adapter is not None) == (mode == "latent")
    if adapter is not None:
      assert adapter.batch_size == 1 and alpha == 0.7
  v, f, i, l = (recs[m]["tokens"] for m in prompts.MODES)
  assert l["prefill"] == v["prefill"]  # the latent agent's prompt is the vanilla prompt
  assert i["prefill"][0] - v["prefill"][0] == i["skill"][0] > 300
  assert f["prefill"][0] - v["prefill"][0] == f["demo"][0] > 0
  for r in recs.values():
    assert r["steps"] == 1 and r["task_type"] == "pick_and_place_simple" and not r["error"]
    assert r["fallbacks"] == 1  # a random model writes no admissible action
  table = open(tmp_path / "results.md").read()
  assert "| Mode | Pick | Look | Clean | Heat | Cool | Pick2 | Avg |" in table
  assert json.load(open(tmp_path / "results.json"))["tables"]["valid_seen"]["incontext"][
      "skill_per_step"] == i["skill"][0] == rep["tables"]["valid_seen"]["incontext"]["skill_per_step"]


def test_searchqa_every_mode_end_to_end(bb, tok, sqa_dir, tmp_path):
  spy = Spy(runner.backbone_generate_fn(bb, max_new_tokens=4))
  rt = runtime(tok, tmp_path, spy, compile_fn=random_compile_fn(bb.config), compiler_name="rand")
  evaluation.evaluate(sqa_config(sqa_dir, num_per_type=1), list(prompts.MODES), rt)
  recs = results.ResultsLog(str(tmp_path / "episodes.jsonl")).records()
  assert len(recs) == 12 and len(spy.calls) == 4  # 3 questions x 4 modes, one batch per mode
  for (ids, adapter, _), mode in zip(spy.calls, prompts.MODES):
    assert len(ids) == 3
    got = [r for r in recs if r["mode"] == mode]
    assert sorted(len(p) for p in ids) == sorted(r["tokens"]["prefill"][0] for r in got)
    if mode == "latent":  # one adapter row per question, routed by its skill type
      assert adapter.batch_size == 3
      skills_in_batch = {r["skill"] for r in got}
      assert skills_in_batch == {"direct_retrieval", "multi_hop", "comparison"}
  assert all(r["fallbacks"] == 1 and r["steps"] == 1 and r["em"] == 0.0 for r in recs)
  assert "| Mode | Direct | Multi-hop | Comparison | Avg |" in open(tmp_path / "results.md").read()


# ----------------------------------------------------------------------------- scripted agents


def test_scripted_agent_wins_and_fallbacks_are_counted(tok, games_root, tmp_path):
  game = tasks.alfworld_games("valid_seen", games_root)[0]
  plan = aw.stored_walkthrough(game.game_file)
  replies = ["no tags at all", "<action>fly to the moon</action>"]
  replies += [f"<think>next</think><action>  {a.upper()} </action>" for a in plan]
  spy = Spy(scripted(tok, lambda prompt: replies.pop(0)))
  evaluation.evaluate(alf_config(games_root, max_steps=len(plan) + 5), ["vanilla"],
                      runtime(tok, tmp_path, spy))
  rec, = results.ResultsLog(str(tmp_path / "episodes.jsonl")).records()
  assert rec["won"] and rec["success"] == 1.0 and not rec["error"]
  assert rec["steps"] == len(plan) + 2
  assert rec["fallbacks"] == 2 and rec["fallback_reasons"] == {"no_action": 1, "not_admissible": 1}
  assert [t["action"] for t in rec["trace"]] == ["look", "look"] + plan
  assert rec["tokens"]["prefill"] == [len(c[0][0]) for c in spy.calls]
  assert rec["tokens"]["decode"] == [len(tok(r, add_special_tokens=False)["input_ids"]) for r in
                                     ["no tags at all", "<action>fly to the moon</action>"]] + [
      len(tok(f"<think>next</think><action>  {a.upper()} </action>", add_special_tokens=False)["input_ids"]) for a in plan]


class FakeState(dict):
  def __init__(self, feedback, won=False):
    super().__init__(admissible_commands=["look", "win"], won=won)
    self.feedback = feedback


class FakeGame:
  """A stand-in engine: 'win' wins; `crash_on_step` raises like a broken engine."""

  def __init__(self, crash_on_step=False):
    self.crash_on_step = crash_on_step

  def reset(self):
    return FakeState("Welcome.\n\nYour task is to: win.")

  def step(self, command):
    if self.crash_on_step:
      raise RuntimeError("engine crashed")
    return FakeState("You won." if command == "win" else "Nothing.", command == "win"), 0, command == "win"

  def close(self):
    pass


def test_environment_errors_end_only_their_episode(tok):
  def broken_open(_):
    raise OSError("game file unreadable")

  eps = [AlfworldEpisode("crash", "f", "pick_and_place_simple", mode="vanilla", skill="pick",
                         open_fn=lambda _: FakeGame(crash_on_step=True)),
         AlfworldEpisode("no-start", "f", "pick_and_place_simple", mode="vanilla", skill="pick",
                         open_fn=broken_open),
         AlfworldEpisode("fine", "f", "pick_and_place_simple", mode="vanilla", skill="pick",
                         open_fn=lambda _: FakeGame())]
  recs = runner.run_episodes(eps, tokenizer=tok, batch_size=2,
                             generate_fn=scripted(tok, lambda p: "<action>win</action>"))
  by_id = {r["id"]: r for r in recs}
  assert by_id["crash"]["error"] == "RuntimeError: engine crashed" and not by_id["crash"]["won"]
  assert by_id["no-start"]["error"].startswith("OSError") and by_id["no-start"]["steps"] == 0
  assert by_id["fine"]["won"] and by_id["fine"]["error"] is None and by_id["fine"]["steps"] == 1


def test_resume_skips_finished_episodes(tok, sqa_dir, tmp_path):
  questions = {q["question"]: q for q in tasks.searchqa_questions(sqa_dir, "test")}

  def oracle(prompt):  # answers from the gold record of the question in the prompt
    question = re.search(r"Question: (.+?)<", prompt).group(1).strip()
    return f"<think>known</think><answer>{questions[question]['golden_answers'][0]}</answer>"

  cfg = sqa_config(sqa_dir, num_per_type=2)
  spy = Spy(scripted(tok, oracle))
  rep = evaluation.evaluate(cfg, ["vanilla"], runtime(tok, tmp_path, spy))
  assert sum(len(c[0]) for c in spy.calls) == 6
  assert rep["tables"]["test"]["vanilla"]["average"]["rate"] == 100.0

  spy.calls.clear()
  evaluation.evaluate(cfg, ["vanilla"], runtime(tok, tmp_path, spy))
  assert spy.calls == []  # everything was finished

  path = tmp_path / "episodes.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines[:4]) + lines[4][:40])  # two lost, one cut short by a crash
  rep = evaluation.evaluate(cfg, ["vanilla"], runtime(tok, tmp_path, spy))
  assert sum(len(c[0]) for c in spy.calls) == 2
  recs = results.ResultsLog(str(path)).records()
  assert len(recs) == len({r["key"] for r in recs}) == 6
  assert rep["tables"]["test"]["vanilla"]["episodes"] == 6

  spy.calls.clear()  # other settings are other episodes
  evaluation.evaluate(sqa_config(sqa_dir, num_per_type=2, max_steps=3), ["vanilla"],
                      runtime(tok, tmp_path, spy))
  assert sum(len(c[0]) for c in spy.calls) == 6


def test_missing_data_names_the_command(tok, tmp_path):
  empty = str(tmp_path / "nothing")
  with pytest.raises(tasks.DataMissingError, match=r"python -m launch\.make_alfworld_games --out="):
    evaluation.evaluate(alf_config(empty), ["vanilla"], runtime(tok, tmp_path, None))
  with pytest.raises(tasks.DataMissingError, match=r"python -m launch\.build_searchqa --out_dir="):
    evaluation.evaluate(sqa_config(empty), ["vanilla"], runtime(tok, tmp_path, None))
  with pytest.raises(ValueError, match="--compiler"):
    evaluation.evaluate(sqa_config(empty), ["latent"], runtime(tok, tmp_path, None))


# ----------------------------------------------------------------------------- teacher data


def _spy_on_the_record_writer(monkeypatch) -> list:
  """The arguments of every teacher.stage2_record call (the one Stage-2 record writer)."""
  calls, write = [], teacher.stage2_record
  monkeypatch.setattr(teacher, "stage2_record", lambda *a: calls.append(a) or write(*a))
  return calls


def test_teacher_turns_are_the_runner_prompts(tok, games_root, tmp_path, monkeypatch):
  game = tasks.alfworld_games("valid_seen", games_root)[0]
  play, = aw.expert_trajectories([game.game_file])
  assert play.won
  conversation = teacher.alfworld_conversation(play)
  users = [m["content"] for m in conversation if m["role"] == "user"]
  answers = [m["content"] for m in conversation if m["role"] == "assistant"]
  assert len(users) == len(answers) == len(play.steps)
  assert all(re.fullmatch(r"<think>[^<]+</think>\n<action>[^<]+</action>", a) for a in answers)
  # Replaying the teacher's answers through the runner sends exactly its user turns.
  spy = Spy(scripted(tok, lambda p, it=iter(answers): next(it)))
  evaluation.evaluate(alf_config(games_root), ["vanilla"], runtime(tok, tmp_path, spy))
  assert [c[0][0] for c in spy.calls] == [chat_prompt_ids(tok, u) for u in users]
  rec, = results.ResultsLog(str(tmp_path / "episodes.jsonl")).records()
  assert rec["won"] and rec["fallbacks"] == 0

  skill_text = skills.load_skills(ALF_SKILLS, "alfworld")["pick"].text
  written = _spy_on_the_record_writer(monkeypatch)
  record, = teacher.alfworld_stage2_records([play], {play.task_type: skill_text}, tok)
  assert len(written) == 1
  assert sorted(record) == ["context", "contextlen", "conversationlen", "conversations"]
  assert record["context"] == skill_text and record["conversations"] == conversation
  assert record["contextlen"] == len(tok(skill_text, add_special_tokens=False)["input_ids"])
  assert record["conversationlen"] > sum(len(chat_prompt_ids(tok, u)) for u in users[-1:])


def test_searchqa_teacher_records_come_from_the_same_writer(tok, sqa_dir, monkeypatch):
  trajs, _ = sq.build_trajectories(tasks.searchqa_questions(sqa_dir, "train")[:6],
                                   tasks.searchqa_retriever(sqa_dir))
  assert trajs
  skill_for = {t: f"The {t} skill." for t in sq.SKILL_TYPES}
  written = _spy_on_the_record_writer(monkeypatch)
  recs = teacher.searchqa_stage2_records(trajs, skill_for, tok)
  assert len(written) == len(recs) == len(trajs)
  for rec, t in zip(recs, trajs):
    assert sorted(rec) == ["context", "contextlen", "conversationlen", "conversations"]
    assert rec["context"] == skill_for[t["skill_type"]]
    assert rec["conversations"] == sq.trajectory_messages(t)
  with pytest.raises(KeyError, match="no skill text"):
    teacher.searchqa_stage2_records(trajs[:1], {}, tok)


# ----------------------------------------------------------------------------- files, tables


def test_results_log_appends_whole_lines_and_repairs_a_cut_line(tmp_path):
  path = str(tmp_path / "r.jsonl")
  log = results.ResultsLog(path)
  log.append({"key": "a", "x": 1})
  with open(path, "a") as f:
    f.write('{"key": "b", "x"')  # a crash in the middle of a line
  log = results.ResultsLog(path)
  log.append({"key": "c"})
  assert [r["key"] for r in log.records()] == ["a", "c"]
  assert log.finished_keys() == {"a", "c"}


def test_report_averages_and_tokens_per_step():
  def rec(task_type, won, steps, prefill, skill=0):
    return {"task_type": task_type, "success": float(won), "fallbacks": 1,
            "tokens": {"prefill": [prefill] * steps, "decode": [10] * steps, "skill": [skill] * steps}}
  recs = [rec("pick_and_place_simple", True, 2, 100, 40), rec("pick_and_place_simple", False, 4, 130, 40),
          rec("pick_two_obj_and_place", True, 2, 100, 40)]
  rep = report.build("alfworld", {"valid_unseen": {"incontext": recs}})
  row = rep["tables"]["valid_unseen"]["incontext"]
  assert row["by_type"]["pick_and_place_simple"]["rate"] == 50.0
  assert row["by_type"]["look_at_obj_in_light"]["rate"] is None
  assert row["average"]["rate"] == pytest.approx(200 / 3)
  assert row["prefill_per_step"] == pytest.approx((200 + 520 + 200) / 8)
  assert row["skill_per_step"] == 40 and row["steps_per_episode"] == pytest.approx(8 / 3)
  md = report.to_markdown(rep)
  assert "unseen" in md and "| incontext | 50.0 | — | — | — | — | 100.0 | 66.7 | 2.7 | 115 | 10 | 40 |" in md
