"""The Search-QA step environment.

One episode is one question. At each step the agent's text is parsed for its
last ``<search>query</search>`` or ``<answer>...</answer>``:

  * search -> the environment retrieves the top-k passages and returns them as
    ``<information>Doc 1 (Title: ...) text ...</information>``;
  * answer -> the episode ends and the answer is scored by exact match;
  * neither -> invalid; as in the paper's evaluation this ends the episode
    (set ``invalid_ends_episode=False`` to give feedback and go on instead).

After ``max_steps`` (4, as in the paper) turns without an answer the episode
ends unanswered (EM 0). ``SearchQABatch`` steps many episodes together and
sends all their searches to the retriever in one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lskill_jax.envs.searchqa.corpus import Passage
from lskill_jax.envs.searchqa.metrics import exact_match, f1_score, parse_action
from lskill_jax.envs.searchqa.retriever import DEFAULT_TOPK, Retriever

MAX_STEPS = 4

AGENT_INSTRUCTIONS = (
  "You are an expert agent answering questions step by step with the help of a search engine.\n"
  "At each step, first reason briefly inside <think> </think>. Then output exactly one of:\n"
  "(1) <search> your query </search> if you lack some knowledge; the results will be returned "
  "between <information> and </information>.\n"
  "(2) <answer> your answer </answer> once you can answer, with the answer only and no explanation, "
  "for example <answer>Beijing</answer>.\n"
  f"You have at most {MAX_STEPS} steps, and the last one must give the answer."
)

NO_RESULTS = "No results found."
INVALID_FEEDBACK = (
  "Your previous output had no valid action. Put a search query between <search> and </search>, "
  "or the final answer between <answer> and </answer>."
)


def question_prompt(question: str) -> str:
  """The first user message of an episode."""
  return f"Question: {question.strip()}"


def format_information(passages: Sequence[Passage]) -> str:
  """Search results as the agent sees them, wrapped in ``<information>``."""
  if not passages:
    body = NO_RESULTS
  else:
    body = "\n".join(f"Doc {i} (Title: {p['title']}) {p['text']}" for i, p in enumerate(passages, 1))
  return f"<information>{body}</information>"


@dataclasses.dataclass
class StepResult:
  """What one step returns.

  ``observation`` is the next user message (the ``<information>`` block, or
  feedback), None when the episode ended without one. ``reward`` is the EM
  score, non-zero only at the end. ``action`` is "search", "answer" or
  "invalid".
  """

  observation: str | None
  done: bool
  reward: float
  action: str
  content: str = ""


class SearchQAEnv:
  """One Search-QA episode over a retriever."""

  def __init__(
    self,
    question: str,
    golden_answers: Sequence[str],
    retriever: Retriever,
    max_steps: int = MAX_STEPS,
    topk: int = DEFAULT_TOPK,
    invalid_ends_episode: bool = True,
    record: dict | None = None,
  ):
    if max_steps < 1:
      raise ValueError(f"max_steps must be at least 1, got {max_steps}.")
    self.question = question
    self.golden_answers = list(golden_answers)
    self.retriever = retriever
    self.max_steps = max_steps
    self.topk = topk
    self.invalid_ends_episode = invalid_ends_episode
    self.record = record or {}
    self.reset()

  @classmethod
  def from_record(cls, record: dict, retriever: Retriever, **kwargs) -> "SearchQAEnv":
    """An episode for a question record (``question``, ``golden_answers``)."""
    return cls(record["question"], record["golden_answers"], retriever, record=record, **kwargs)

  def reset(self) -> str:
    """Starts the episode over; returns the first user message."""
    self.steps = 0
    self.done = False
    self.answer: str | None = None
    self.history: list[dict] = []
    return question_prompt(self.question)

  @property
  def em(self) -> float:
    """Exact match of the final answer (0 while unanswered)."""
    return exact_match(self.answer, self.golden_answers)

  @property
  def f1(self) -> float:
    """Token F1 of the final answer (0 while unanswered)."""
    return f1_score(self.answer, self.golden_answers)

  def pending_query(self, text: str) -> str | None:
    """The query ``text`` would search for, or None; changes nothing."""
    action = parse_action(text)
    return action.content if action.kind == "search" and not self.done else None

  def step(self, text: str, passages: Sequence[Passage] | None = None) -> StepResult:
    """Applies the agent's output ``text``.

    ``passages`` lets a batch pass in results it already retrieved for this
    episode's query; otherwise the retriever is called here.
    """
    if self.done:
      raise RuntimeError("step() called on a finished episode; call reset() or start a new env.")
    self.steps += 1
    action = parse_action(text)
    last_step = self.steps >= self.max_steps
    entry = {"output": text, "action": action.kind, "content": action.content}

    if action.kind == "answer":
      self.answer = action.content
      self.done = True
      result = StepResult(None, True, self.em, "answer", action.content)
    elif action.kind == "search":
      if passages is None:
        passages = self.retriever.search(action.content, self.topk)
      observation = format_information(passages)
      entry["passages"] = [p.get("id") for p in passages]
      # The information is still shown on the last step (for logs), but
      # the episode is over: there is no turn left to answer in.
      self.done = last_step
      result = StepResult(observation, self.done, 0.0, "search", action.content)
    else:
      self.done = self.invalid_ends_episode or last_step
      observation = None if self.done else INVALID_FEEDBACK
      result = StepResult(observation, self.done, 0.0, "invalid")
    self.history.append(entry)
    return result

  def summary(self) -> dict:
    """A JSON-able record of the episode for result files."""
    return {
      "id": self.record.get("id"),
      "skill_type": self.record.get("skill_type"),
      "question": self.question,
      "golden_answers": self.golden_answers,
      "pred_answer": self.answer or "",
      "em": self.em,
      "f1": self.f1,
      "steps": self.steps,
      "history": self.history,
    }


class SearchQABatch:
  """Steps a list of episodes together; one retriever call per batch step."""

  def __init__(self, envs: Sequence[SearchQAEnv]):
    if not envs:
      raise ValueError("SearchQABatch needs at least one episode.")
    self.envs = list(envs)

  @classmethod
  def from_records(cls, records: Sequence[dict], retriever: Retriever, **kwargs) -> "SearchQABatch":
    """One episode per question record, all sharing one retriever."""
    return cls([SearchQAEnv.from_record(r, retriever, **kwargs) for r in records])

  def reset(self) -> list[str]:
    """First user message of every episode."""
    return [env.reset() for env in self.envs]

  @property
  def done(self) -> list[bool]:
    return [env.done for env in self.envs]

  @property
  def all_done(self) -> bool:
    return all(env.done for env in self.envs)

  def step(self, texts: Sequence[str | None]) -> list[StepResult | None]:
    """Steps every unfinished episode with its text.

    ``texts`` is aligned with the episodes; entries for finished episodes
    are ignored (pass None) and come back as None.
    """
    if len(texts) != len(self.envs):
      raise ValueError(f"Got {len(texts)} outputs for {len(self.envs)} episodes; pass one per episode.")
    queries: dict[int, str] = {}
    for i, (env, text) in enumerate(zip(self.envs, texts)):
      if not env.done and text is not None:
        q = env.pending_query(text)
        if q is not None:
          queries[i] = q
    # Episodes may differ in retriever or k: one batch call per such group.
    groups: dict[tuple[int, int], list[int]] = {}
    for i in queries:
      groups.setdefault((id(self.envs[i].retriever), self.envs[i].topk), []).append(i)
    found: dict[int, list[Passage]] = {}
    for members in groups.values():
      head = self.envs[members[0]]
      batched = head.retriever.batch_search([queries[i] for i in members], head.topk)
      found.update(zip(members, batched))

    results: list[StepResult | None] = []
    for i, (env, text) in enumerate(zip(self.envs, texts)):
      if env.done or text is None:
        results.append(None)
        continue
      results.append(env.step(text, passages=found.get(i)))
    return results

  def scores(self) -> list[dict]:
    """Per-episode summaries (EM, F1, steps, history)."""
    return [env.summary() for env in self.envs]
