"""Offline Search-QA: corpus, questions, retrieval, metrics, environment, teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import save_tiny_model
from lskill_jax.data.records import read_ift_json
from lskill_jax.envs import searchqa as sq
from lskill_jax.envs.searchqa.questions import MIN_COMPARISON_RATIO
from lskill_jax.io import read_jsonl

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def facts():
  return sq.load_country_facts()


@pytest.fixture(scope="module")
def corpus(facts):
  return sq.build_corpus(facts)


@pytest.fixture(scope="module")
def by_id(corpus):
  return {p["id"]: p for p in corpus}


@pytest.fixture(scope="module")
def retriever(corpus):
  return sq.BM25Retriever(corpus)


@pytest.fixture(scope="module")
def splits(facts):
  return sq.build_questions(facts, seed=0, per_type=300, test_fraction=0.2)


@pytest.fixture(scope="module")
def all_questions(splits):
  return splits["train"] + splits["test"]


# --- corpus -------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_round_trips(facts, corpus, tmp_path):
  assert len(facts) > 200 and len(corpus) > 5 * len(facts)
  assert sq.build_corpus(facts) == corpus
  ids = [p["id"] for p in corpus]
  assert len(ids) == len(set(ids))
  path = str(tmp_path / "corpus.jsonl")
  sq.save_corpus(path, corpus)
  assert sq.load_corpus(path) == corpus
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], "temp file left behind"


def test_entities_have_several_short_passages(corpus):
  per_entity = {}
  for p in corpus:
    per_entity.setdefault(p["id"].split("--")[0], []).append(p)
  france = {p["id"]: p for p in per_entity["france"]}
  assert len(france) >= 8
  assert "Paris" in france["france--capital"]["text"]
  assert "Euro" in france["france--currency"]["text"]
  assert "Euro" not in france["france--capital"]["text"]  # one fact per passage
  assert max(len(p["text"].split()) for p in corpus) < 80
  assert not [p for p in corpus if ".." in p["text"]]


def test_load_corpus_accepts_wiki18_records(tmp_path):
  path = tmp_path / "wiki.jsonl"
  path.write_text(json.dumps({"id": "7", "contents": '"Danube"\nThe Danube is a river.'}) + "\n")
  assert sq.load_corpus(str(path)) == [{"id": "7", "title": "Danube", "text": "The Danube is a river."}]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": 1}\n')
  with pytest.raises(ValueError, match="neither 'text' nor 'contents'"):
    sq.load_corpus(str(bad))


# --- questions ----------------------------------------------------------------------------


def test_splits_are_deterministic_balanced_and_disjoint(facts, splits):
  again = sq.build_questions(facts, seed=0, per_type=300, test_fraction=0.2)
  assert again == splits
  other = sq.build_questions(facts, seed=1, per_type=300, test_fraction=0.2)
  assert [r["id"] for r in other["test"]] != [r["id"] for r in splits["test"]]
  train_ids = {r["id"] for r in splits["train"]}
  assert train_ids.isdisjoint(r["id"] for r in splits["test"])
  for skill_type in sq.SKILL_TYPES:
    n_train = sum(r["skill_type"] == skill_type for r in splits["train"])
    n_test = sum(r["skill_type"] == skill_type for r in splits["test"])
    assert (n_train, n_test) == (240, 60)


def test_answers_are_supported_by_the_corpus(all_questions, by_id):
  texts = {q["question"] for q in all_questions}
  assert len(texts) == len(all_questions), "duplicate question texts"
  for q in all_questions:
    assert q["golden_answers"] and all(q["golden_answers"])
    assert q["hops"]
    for hop in q["hops"]:
      assert hop["support"], hop
      stated = [by_id[pid] for pid in hop["support"]]
      assert any(sq.contains_answer(f"{p['title']}. {p['text']}", hop["answer"]) for p in stated), hop
    if q["skill_type"] != "comparison":
      # The final hop's answer is the question's answer.
      assert sq.exact_match(q["hops"][-1]["answer"], q["golden_answers"]) == 1.0


def test_multi_hop_bridges_are_unique(facts, all_questions):
  capital_owners = {}
  for f in facts:
    if f.capital:
      capital_owners.setdefault(sq.normalize_answer(f.capital), []).append(f.name)
  neighbours = {f.name: set(f.borders) for f in facts}
  for f in facts:
    for other in f.borders:
      neighbours[other].add(f.name)
  multi = [q for q in all_questions if q["skill_type"] == "multi_hop"]
  relations = {q["relation"] for q in multi}
  assert "borders_to_capital" in relations and len(relations) >= 4
  for q in multi:
    bridge = q["hops"][0]["answer"]
    if q["relation"] == "borders_to_capital":
      a, b = q["hops"][0]["entity"], q["hops"][1]["entity"]
      assert neighbours[a] & neighbours[b] == {bridge}, q["question"]
    else:
      assert capital_owners[sq.normalize_answer(q["hops"][0]["entity"])] == [bridge], q["question"]


def test_comparisons_have_a_clear_winner(facts, all_questions):
  by_name = {f.name: f for f in facts}
  comparisons = [q for q in all_questions if q["skill_type"] == "comparison"]
  assert {q["relation"] for q in comparisons} == {"compare_population", "compare_area"}
  for q in comparisons:
    x, y = (by_name[h["entity"]] for h in q["hops"])
    field = "population" if q["relation"] == "compare_population" else "area_km2"
    vx, vy = getattr(x, field), getattr(y, field)
    assert max(vx, vy) >= MIN_COMPARISON_RATIO * min(vx, vy)
    winner, loser = (x, y) if vx > vy else (y, x)
    assert q["golden_answers"][0] == winner.name
    assert sq.exact_match(loser.name, q["golden_answers"]) == 0.0


def test_read_qa_jsonl_reads_the_paper_format(tmp_path):
  path = tmp_path / "test.jsonl"
  lines = [
      {"id": "nq_1", "dataset": "nq", "skill": "direct_retrieval", "question": "who wrote rebecca",
       "golden_answers": ["Daphne du Maurier"]},
      {"id": "hp_2", "dataset": "hotpotqa", "skill": "multi_hop_reasoning", "question": "q2",
       "golden_answers": "yes"},
      {"question": "q3", "golden_answers": ["x"]},
  ]
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
  recs = sq.read_qa_jsonl(str(path))
  assert [r["skill_type"] for r in recs] == ["direct_retrieval", "multi_hop", "direct_retrieval"]
  assert recs[1]["golden_answers"] == ["yes"] and recs[1]["dataset"] == "hotpotqa"
  assert recs[2]["id"] == "2" and recs[2]["hops"] == []


# --- metrics ------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, gold, em", [
    ("The Euro", ["Euro"], 1.0),
    ("  paris. ", "Paris", 1.0),
    ("66,078,000", ["66,078,000"], 1.0),
    ("66078000", ["66,078,000"], 1.0),
    ("an apple a day", ["apple day"], 1.0),
    ("Brasília", ["Brasilia", "Brasília"], 1.0),
    ("Parisian", ["Paris"], 0.0),
    ("Paris, France", ["Paris"], 0.0),
    (None, ["Paris"], 0.0),
    ("", ["Paris"], 0.0),
])
def test_exact_match(pred, gold, em):
  assert sq.exact_match(pred, gold) == em


def test_normalize_and_f1():
  assert sq.normalize_answer("  The  U.S.   Dollar!! ") == "us dollar"
  assert sq.f1_score("Paris, France", ["Paris"]) == pytest.approx(2 / 3)
  assert sq.f1_score("Lyon", ["Paris"]) == 0.0
  assert sq.f1_score("us dollar", ["US Dollar", "USD"]) == 1.0


def test_contains_answer_respects_word_boundaries():
  assert sq.contains_answer("Niger has a population of 17,138,707 people.", "17138707")
  assert not sq.contains_answer("Nigeria is large.", "Niger")


@pytest.mark.parametrize("text, kind, content", [
    ("<think>need it</think>\n<search> capital of France </search>", "search", "capital of France"),
    ("<search>a</search> then <answer>Paris</answer>", "answer", "Paris"),
    ("<answer>Paris</answer> hmm <search>more</search>", "search", "more"),
    ("<think>maybe <answer>Lyon</answer></think><answer>Paris</answer>", "answer", "Paris"),
    ("<think>I could <search>x</search></think><answer>Paris", "answer", "Paris"),
    ("<ANSWER>Paris</Answer>", "answer", "Paris"),
    ("<search>  </search>", "invalid", ""),
    ("I think it is Paris.", "invalid", ""),
    ("<think>only <answer>Lyon</answer></think>", "answer", "Lyon"),
    ("", "invalid", ""),
])
def test_parse_action(text, kind, content):
  assert sq.parse_action(text) == sq.Action(kind, content)


def test_extract_helpers():
  assert sq.extract_answer("<answer>Paris</answer><search>x</search>") == "Paris"
  assert sq.extract_answer("no tags") is None
  assert sq.extract_search("<search>q</search>") == "q"
  assert sq.extract_search("<answer>a</answer>") is None


# --- retrieval ----------------------------------------------------------------------------


def test_direct_questions_retrieve_their_gold_passage(retriever, all_questions):
  direct = [q for q in all_questions if q["skill_type"] == "direct_retrieval"][::3]
  recall = sq.retrieval_recall(direct, retriever, k=3)
  assert recall >= 0.95, recall
  top = retriever.search("What is the capital of France?")
  assert len(top) == 3 and top[0]["id"] in {"france--capital", "france--overview"}


def test_retriever_hook_accepts_user_factories(corpus, tmp_path):
  class FirstK:
    def __init__(self, passages):
      self.passages = passages

    def search(self, query, k=3):
      return self.passages[:k]

    def batch_search(self, queries, k=3):
      return [self.search(q, k) for q in queries]

  r = sq.load_retriever(corpus, factory=FirstK)
  assert r.search("anything", 2) == corpus[:2]
  path = str(tmp_path / "c.jsonl")
  sq.save_corpus(path, corpus[:5])
  assert len(sq.load_retriever(corpus_path=path).passages) == 5
  with pytest.raises(ValueError, match="package.module:function"):
    sq.load_retriever(corpus, factory="no_colon")
  with pytest.raises(TypeError, match="lacks"):
    sq.load_retriever(corpus, factory=lambda passages: object())


# --- environment --------------------------------------------------------------------------


class CountingRetriever:
  """Wraps a retriever and counts batch calls, to check batching."""

  def __init__(self, inner):
    self.inner = inner
    self.calls = 0

  def search(self, query, k=3):
    return self.batch_search([query], k)[0]

  def batch_search(self, queries, k=3):
    self.calls += 1
    return self.inner.batch_search(queries, k)


def test_env_answers_and_scores(retriever):
  env = sq.SearchQAEnv("What is the capital of France?", ["Paris"], retriever)
  assert env.reset() == "Question: What is the capital of France?"
  r = env.step("<think>look it up</think><search>France capital</search>")
  assert r.action == "search" and not r.done and r.reward == 0.0
  assert r.observation.startswith("<information>Doc 1 (Title: ")
  assert r.observation.endswith("</information>")
  assert r.observation.count("\nDoc ") == 2 and "Paris" in r.observation
  r = env.step("<think>found</think><answer>paris</answer>")
  assert r.done and r.reward == 1.0 and env.em == 1.0 and env.f1 == 1.0
  assert env.summary()["pred_answer"] == "paris"
  with pytest.raises(RuntimeError, match="finished episode"):
    env.step("<answer>x</answer>")


def test_env_enforces_the_step_limit(retriever):
  env = sq.SearchQAEnv("q", ["Paris"], retriever)
  results = [env.step("<search>France capital</search>") for _ in range(sq.MAX_STEPS)]
  assert [r.done for r in results] == [False] * (sq.MAX_STEPS - 1) + [True]
  assert env.steps == sq.MAX_STEPS and env.em == 0.0 and env.answer is None


def test_env_invalid_output(retriever):
  env = sq.SearchQAEnv("q", ["Paris"], retriever)
  r = env.step("I am not sure.")
  assert r.done and r.action == "invalid" and r.reward == 0.0
  env = sq.SearchQAEnv("q", ["Paris"], retriever, invalid_ends_episode=False)
  r = env.step("I am not sure.")
  assert not r.done and "<search>" in r.observation
  assert env.step("<answer>Paris</answer>").reward == 1.0


def test_batch_steps_many_episodes_with_one_retrieval_call(retriever):
  counting = CountingRetriever(retriever)
  records = [
      {"id": "a", "question": "capital of France?", "golden_answers": ["Paris"]},
      {"id": "b", "question": "capital of Japan?", "golden_answers": ["Tokyo"]},
      {"id": "c", "question": "currency of Japan?", "golden_answers": ["Yen"]},
  ]
  batch = sq.SearchQABatch.from_records(records, counting)
  assert len(batch.reset()) == 3
  out = batch.step([
      "<search>France capital</search>", "<answer>Tokyo</answer>", "<search>Japan currency</search>"])
  assert counting.calls == 1
  assert out[1].done and out[1].reward == 1.0
  assert "Paris" in out[0].observation and "Yen" in out[2].observation
  out = batch.step(["<answer>Paris</answer>", None, "<answer>Euro</answer>"])
  assert out[1] is None and batch.all_done
  assert [s["em"] for s in batch.scores()] == [1.0, 1.0, 0.0]
  summary = sq.summarize_scores([{**s, "skill_type": "direct_retrieval"} for s in batch.scores()])
  assert summary["all"]["em"] == pytest.approx(2 / 3) and summary["all"]["count"] == 3


# --- teacher ------------------------------------------------------------------------------




def test_teacher_trajectories_read_their_facts(splits, retriever):
  sample = splits["train"][::4]
  trajs, stats = sq.build_trajectories(sample, retriever)
  assert stats["total"] == len(sample) and stats["kept"] == len(trajs)
  assert len(trajs) >= 0.9 * len(sample)
  by_id = {q["id"]: q for q in sample}
  for t in trajs:
    q = by_id[t["id"]]
    assert t["answer"] == q["golden_answers"][0]
    assert len(t["turns"]) == len(q["hops"]) <= sq.MAX_STEPS - 1
    for turn, hop in zip(t["turns"], q["hops"]):
      assert sq.contains_answer(turn["information"], hop["answer"]), (turn, hop)
      assert set(turn["passage_ids"]) & set(hop["support"])


def test_trajectory_messages_follow_the_conversation_format(splits, retriever):
  sample = [q for q in splits["train"] if q["skill_type"] == "multi_hop"][:5]
  trajs, _ = sq.build_trajectories(sample, retriever)
  assert trajs
  questions = {q["id"]: q for q in sample}
  for traj in trajs:
    q = questions[traj["id"]]
    msgs = sq.trajectory_messages(traj)
    assert [m["role"] for m in msgs[:2]] == ["system", "user"]
    assert all(m["role"] == "assistant" for m in msgs[2::2])
    assert all(m["content"].startswith("<information>") for m in msgs[3::2])
    for m in msgs[2:-1:2]:
      assert sq.parse_action(m["content"]).kind == "search"
    final = sq.parse_action(msgs[-1]["content"])
    assert final.kind == "answer" and sq.exact_match(final.content, q["golden_answers"]) == 1.0
    # Replaying the assistant turns through the environment reproduces the observations.
    env = sq.SearchQAEnv.from_record(q, retriever)
    for m, obs in zip(msgs[2::2], msgs[3::2] + [None]):
      r = env.step(m["content"])
      assert r.observation == (obs["content"] if obs else None)
    assert env.em == 1.0


def test_teacher_drops_trajectories_whose_searches_miss(splits, corpus):
  class Useless:
    def search(self, query, k=3):
      return corpus[-k:]

    def batch_search(self, queries, k=3):
      return [self.search(q, k) for q in queries]

  trajs, stats = sq.build_trajectories(splits["train"][:10], Useless())
  assert trajs == [] and stats["unsupported"] == 10


# --- launch -------------------------------------------------------------------------------


def test_launch_writes_all_outputs(tmp_path):
  model = tmp_path / "tiny_qwen3"  # its tokenizer (Qwen3's) measures the records' lengths
  save_tiny_model(model, vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)
  skill_dir = tmp_path / "skills"
  for t in sq.SKILL_TYPES:
    (skill_dir / t).mkdir(parents=True)
    (skill_dir / t / "SKILL.md").write_text(f"---\nname: {t}\n---\n\nBody of {t}.\n")
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "launch.build_searchqa", f"--out_dir={out}", "--per_type=30",
         f"--teacher_out={out / 'skill_ift' / 'train.json'}", f"--skill_dir={skill_dir}", f"--model={model}"]
  proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["questions"]["train"] == {t: 24 for t in sorted(sq.SKILL_TYPES)}
  assert summary["direct_recall@3"] >= 0.95
  stage2 = json.loads((out / "skill_ift" / "train.json").read_text())
  assert len(stage2) == summary["teacher"]["kept"] > 0
  assert stage2[0]["context"].startswith("Body of ")
  assert sorted(stage2[0]) == ["context", "contextlen", "conversationlen", "conversations"]
  kept, _ = read_ift_json(str(out / "skill_ift" / "train.json"))  # what Stage 2 reads
  assert len(kept) == len(stage2)
  assert len(read_jsonl(str(out / "test.jsonl"))) == 18
