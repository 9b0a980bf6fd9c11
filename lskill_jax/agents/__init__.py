"""Agents that act in ALFWorld and Search-QA: prompts, a batched runner, token accounting, tables.

    from lskill_jax import agents
    rep = agents.evaluate_backbone(bb, config, ["vanilla", "incontext"], "workdir/eval")

Modes: `vanilla`; `fewshot` (one demonstration in the prompt); `incontext` (the
skill text under "Retrieved Relevant Experience"); `latent` (the vanilla prompt with the
compiled skill adapter mounted).
"""

from lskill_jax.agents.accounting import (EncodedPrompt, TokenLedger, encode_prompt,
                                          render_chat)
from lskill_jax.agents.episodes import AlfworldEpisode, Episode, SearchQAEpisode, open_game
from lskill_jax.agents.evaluation import Runtime, evaluate, evaluate_backbone
from lskill_jax.agents.prompts import (MODES, Prompt, alfworld_prompt, choose_action,
                                       parse_action, searchqa_prompt)
from lskill_jax.agents.results import ResultsLog
from lskill_jax.agents.runner import backbone_generate_fn, run_episodes
from lskill_jax.agents.skills import SkillDoc, load_skills, skill_name_for
from lskill_jax.agents.tasks import DataMissingError

__all__ = [
    "AlfworldEpisode", "DataMissingError", "EncodedPrompt", "Episode", "MODES", "Prompt",
    "ResultsLog", "Runtime", "SearchQAEpisode", "SkillDoc", "TokenLedger", "alfworld_prompt",
    "backbone_generate_fn", "choose_action", "encode_prompt", "evaluate", "evaluate_backbone",
    "load_skills", "open_game", "parse_action", "render_chat", "run_episodes", "searchqa_prompt",
    "skill_name_for",
]
