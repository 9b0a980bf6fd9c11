"""Teacher trajectories for Search-QA and the chat messages they become.

A trajectory follows the question's decomposition (``hops``): for each hop the
agent thinks briefly, searches with the hop's keyword query and reads the real
retriever results; the last turn states the gold answer. A trajectory is kept
only if every search actually retrieved the passage stating its hop's fact:
training on a turn that "reads" an answer the observation does not contain
would teach the agent to ignore its search results.

``trajectory_messages`` renders a trajectory as system / user / assistant messages; the
Stage-2 record around them (skill text and token lengths) is written by
``lskill_jax.agents.teacher``, the one writer for both environments.
"""

from __future__ import annotations

from collections.abc import Sequence

from lskill_jax.envs.searchqa.env import AGENT_INSTRUCTIONS, MAX_STEPS, format_information, question_prompt
from lskill_jax.envs.searchqa.metrics import hop_supported
from lskill_jax.envs.searchqa.retriever import DEFAULT_TOPK, Retriever


def _opening_thought(record: dict) -> str:
  hops = record["hops"]
  kind = record["skill_type"]
  if kind == "comparison" and len(hops) >= 2:
    return (
      f"To compare them I need the same figure for {hops[0]['entity']} and for {hops[1]['entity']}. "
      f"I will look them up one at a time, starting with {hops[0]['entity']}."
    )
  if len(hops) > 1:
    return (
      "This question needs more than one step: I must first find an intermediate answer and then use it. "
      f"First I need to know: {hops[0]['question']}"
    )
  return f"The question asks for one fact about {hops[0]['entity']}. I will search for it directly."


def _bridge_thought(prev_hop: dict, next_hop: dict) -> str:
  return f"The results show that {prev_hop['statement']}. Next I need to know: {next_hop['question']}"


def _final_thought(record: dict, answer: str) -> str:
  hops = record["hops"]
  last = f"The results show that {hops[-1]['statement']}."
  if record["skill_type"] == "comparison" and len(hops) == 2:
    a, b = hops
    return f"{last} {a['entity']}: {a['answer']}; {b['entity']}: {b['answer']}. The larger one is {answer}."
  return f"{last} So the answer is {answer}."


def _query(hop: dict) -> str:
  # Short keyword queries, as the skills recommend; the sub-question itself
  # for hops (e.g. from user data) that have none.
  return hop.get("query") or hop["question"]


def _assistant(think: str, tag: str, content: str) -> str:
  return f"<think>{think}</think>\n<{tag}>{content}</{tag}>"


def build_trajectories(
  records: Sequence[dict],
  retriever: Retriever,
  topk: int = DEFAULT_TOPK,
  max_steps: int = MAX_STEPS,
) -> tuple[list[dict], dict]:
  """Teacher trajectories for the records whose searches find their facts.

  All hop queries go to the retriever in one batch. Returns the kept
  trajectories and counts: ``{"total", "kept", "no_hops", "too_long",
  "unsupported"}`` overall and per skill type under ``"by_type"``.

  A trajectory is ``{"id", "skill_type", "question", "golden_answers",
  "answer", "turns": [{"think", "search", "information", "passage_ids"}, ...],
  "final_think"}``.
  """
  stats = {"total": 0, "kept": 0, "no_hops": 0, "too_long": 0, "unsupported": 0, "by_type": {}}
  candidates = []
  for rec in records:
    stats["total"] += 1
    if not rec.get("hops"):
      stats["no_hops"] += 1
    elif len(rec["hops"]) + 1 > max_steps:  # every hop is a turn, plus the answer turn
      stats["too_long"] += 1
    else:
      candidates.append(rec)

  queries = [_query(hop) for rec in candidates for hop in rec["hops"]]
  results = iter(retriever.batch_search(queries, topk) if queries else [])

  kept = []
  for rec in candidates:
    hops = rec["hops"]
    retrieved = [next(results) for _ in hops]
    by_type = stats["by_type"].setdefault(rec["skill_type"], {"candidates": 0, "kept": 0})
    by_type["candidates"] += 1
    if not all(hop_supported(p, h) for p, h in zip(retrieved, hops)):
      stats["unsupported"] += 1
      continue
    answer = rec["golden_answers"][0]
    turns = []
    for i, (hop, passages) in enumerate(zip(hops, retrieved)):
      think = _opening_thought(rec) if i == 0 else _bridge_thought(hops[i - 1], hop)
      turns.append(
        {
          "think": think,
          "search": _query(hop),
          "information": format_information(passages),
          "passage_ids": [p.get("id") for p in passages],
        }
      )
    kept.append(
      {
        "id": rec["id"],
        "skill_type": rec["skill_type"],
        "question": rec["question"],
        "golden_answers": rec["golden_answers"],
        "answer": answer,
        "turns": turns,
        "final_think": _final_thought(rec, answer),
      }
    )
    by_type["kept"] += 1
  stats["kept"] = len(kept)
  return kept, stats


def trajectory_messages(traj: dict) -> list[dict]:
  """A trajectory as chat messages: system, question, then turn by turn."""
  messages = [
    {"role": "system", "content": AGENT_INSTRUCTIONS},
    {"role": "user", "content": question_prompt(traj["question"])},
  ]
  for turn in traj["turns"]:
    messages.append({"role": "assistant", "content": _assistant(turn["think"], "search", turn["search"])})
    messages.append({"role": "user", "content": turn["information"]})
  final = _assistant(traj["final_think"], "answer", traj["answer"])
  messages.append({"role": "assistant", "content": final})
  return messages
