"""Episodes the runner steps: one ALFWorld game or one Search-QA question each.

An episode builds its prompt (`prompt()`), takes the model's text (`act()`), and reports
itself as a JSON record when done (`record()`). Failures of the environment are caught by
the runner and stored in that episode's record (`fail()`); the others go on.

ALFWorld games are played one engine per episode, with the same wrapper stack ALFWorld's
`AlfredTWEnv` uses (PDDL engine, ALFRED display names, `won` and admissible commands):
the runner then chooses which games to play, skips finished ones on a rerun, and an engine
error ends only its own episode.
"""

from __future__ import annotations

from typing import Callable

from lskill_jax.agents import prompts
from lskill_jax.agents.accounting import EncodedPrompt, TokenLedger
from lskill_jax.envs.alfworld.engine import game_engine
from lskill_jax.envs.searchqa import SearchQAEnv

_OUTPUT_CHARS = 2000  # model outputs kept in a record, per step


class Episode:
  """What every episode shares: identity, routing, token ledger, fallbacks, error, trace."""
  env_name = ""

  def __init__(self, episode_id: str, skill: str | None):
    self.id = episode_id
    self.skill = skill
    self.done = False
    self.error: str | None = None
    self.fallbacks: dict[str, int] = {}
    self.ledger = TokenLedger()
    self.trace: list[dict] = []

  def start(self) -> None:
    """Sets the episode up (loads a game, resets an environment)."""

  def prompt(self) -> prompts.Prompt:
    raise NotImplementedError

  def act(self, output: str) -> None:
    raise NotImplementedError

  def account(self, encoded: EncodedPrompt, decoded: int) -> None:
    self.ledger.add(encoded, decoded)

  def fail(self, err: BaseException) -> None:
    """Ends the episode because its environment (or prompt) failed; the run goes on."""
    self.error = f"{type(err).__name__}: {err}"
    self.done = True

  def close(self) -> None:
    """Releases what `start` acquired."""

  @property
  def steps(self) -> int:
    return len(self.ledger.prefill)

  def _count_fallback(self, reason: str) -> None:
    self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1

  def record(self) -> dict:
    return {"id": self.id, "env": self.env_name, "skill": self.skill, "steps": self.steps,
            "fallbacks": sum(self.fallbacks.values()), "fallback_reasons": dict(self.fallbacks),
            "error": self.error, "tokens": self.ledger.to_json(), "trace": self.trace}


# ----------------------------------------------------------------------------- ALFWorld


def open_game(game_file: str):
  """One ALFWorld game on its own engine, wrapped as AlfredTWEnv wraps it (no shuffling)."""
  env = game_engine(extras=["gamefile"])
  env.load(game_file)
  return env


class AlfworldEpisode(Episode):
  """One ALFWorld game played for at most `max_steps` actions; success = the game is won."""
  env_name = "alfworld"

  def __init__(self, episode_id: str, game_file: str, task_type: str, *, mode: str,
               skill: str | None, skill_text: str | None = None, demo_text: str | None = None,
               max_steps: int = 50, history_length: int = 5, obs_chars: int = 300,
               fallback_action: str = "look",
               open_fn: Callable[[str], object] = open_game):
    super().__init__(episode_id, skill)
    self.game_file = game_file
    self.task_type = task_type
    self.mode = prompts.check_mode(mode)
    self.skill_text, self.demo_text = skill_text, demo_text
    self.max_steps, self.history_length, self.obs_chars = max_steps, history_length, obs_chars
    self.fallback_action = fallback_action
    self._open = open_fn
    self.game = None
    self.task = ""
    self.observation = ""
    self.admissible: list[str] = []
    self.history: list[tuple[str, str]] = []
    self.won = False

  def start(self) -> None:
    self.game = self._open(self.game_file)
    state = self.game.reset()
    self.observation = state.feedback
    self.task = prompts.task_description(self.observation)
    self.admissible = list(state["admissible_commands"])
    self.won = bool(state["won"])
    self.done = self.won or self.max_steps <= 0

  def prompt(self) -> prompts.Prompt:
    return prompts.alfworld_prompt(self.task, self.observation, self.admissible, self.history,
                                   mode=self.mode, skill_text=self.skill_text,
                                   demo_text=self.demo_text, history_length=self.history_length,
                                   obs_chars=self.obs_chars)

  def act(self, output: str) -> None:
    choice = prompts.choose_action(output, self.admissible, self.fallback_action)
    if choice.fallback:
      self._count_fallback(choice.fallback)
    self.trace.append({"output": output[:_OUTPUT_CHARS], "parsed": choice.parsed,
                       "action": choice.command, "fallback": choice.fallback})
    state, _, game_over = self.game.step(choice.command)
    self.history.append((self.observation, choice.command))
    self.observation = state.feedback
    self.admissible = list(state["admissible_commands"])
    self.won = bool(state["won"])
    self.trace[-1]["observation"] = self.observation[:self.obs_chars]
    self.done = self.won or bool(game_over) or len(self.history) >= self.max_steps

  def close(self) -> None:
    if self.game is not None:
      try:
        self.game.close()
      except Exception:  # a broken engine must not stop the run while closing
        pass
      self.game = None

  def record(self) -> dict:
    return {**super().record(), "task_type": self.task_type, "task": self.task,
            "won": self.won, "success": float(self.won)}


# ----------------------------------------------------------------------------- Search-QA


class SearchQAEpisode(Episode):
  """One question: search turns, then an answer scored by exact match."""
  env_name = "searchqa"

  def __init__(self, record: dict, retriever, *, mode: str, skill: str | None,
               skill_text: str | None = None, demo_text: str | None = None,
               max_steps: int = 4, topk: int = 3, invalid_ends_episode: bool = True):
    super().__init__(str(record["id"]), skill)
    self.question_record = record
    self.retriever = retriever
    self.mode = prompts.check_mode(mode)
    self.skill_text, self.demo_text = skill_text, demo_text
    self.max_steps, self.topk = max_steps, topk
    self.invalid_ends_episode = invalid_ends_episode
    self.env = None
    self.turns: list[tuple[str, str | None]] = []

  def start(self) -> None:
    self.env = SearchQAEnv.from_record(self.question_record, self.retriever,
                                       max_steps=self.max_steps, topk=self.topk,
                                       invalid_ends_episode=self.invalid_ends_episode)

  def prompt(self) -> prompts.Prompt:
    return prompts.searchqa_prompt(self.env.question, self.turns, mode=self.mode,
                                   skill_text=self.skill_text, demo_text=self.demo_text)

  def act(self, output: str) -> None:
    result = self.env.step(output)
    if result.action == "invalid":
      self._count_fallback("invalid")
    self.turns.append((output, result.observation))
    self.trace.append({"output": output[:_OUTPUT_CHARS], "action": result.action,
                       "content": result.content})
    self.done = result.done

  def record(self) -> dict:
    rec = self.question_record
    summary = self.env.summary() if self.env is not None else {}
    em = float(summary.get("em", 0.0))
    return {**super().record(), "skill_type": rec.get("skill_type"), "question": rec["question"],
            "golden_answers": list(rec.get("golden_answers", [])),
            "pred_answer": summary.get("pred_answer", ""), "em": em,
            "f1": float(summary.get("f1", 0.0)), "success": em}
