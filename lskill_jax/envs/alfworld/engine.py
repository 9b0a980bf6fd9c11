"""One ALFWorld game on TextWorld's PDDL engine, wrapped as ALFWorld's `AlfredTWEnv` wraps it.

Checking generated games, replaying experts and playing agent episodes all go through
`game_engine`, so they see the display names ('apple 1'), admissible commands and `won`
that `AlfredTWEnv` (behind `env.AlfworldEnv`) shows for the same game.
"""

from __future__ import annotations

from typing import Sequence


def game_engine(extras: Sequence[str] = (), handcoded_expert: bool = False):
  """An unloaded single-game engine: PddlEnv -> AlfredDemangler (no shuffling) -> AlfredInfos.

  `extras`: TextWorld extras to report ('gamefile'; 'walkthrough' makes the engine plan when
  the game stores none). `handcoded_expert` adds ALFWorld's heuristic expert on top, whose
  next action is `state['extra.expert_plan'][0]`. Call `.load(game_file or game data)` next.
  """
  import textworld
  from alfworld.agents.environment.alfred_tw_env import (
      AlfredDemangler, AlfredExpert, AlfredExpertType, AlfredInfos)
  from textworld.envs import PddlEnv

  infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=list(extras),
                             facts=handcoded_expert)
  env = AlfredInfos(AlfredDemangler(PddlEnv(infos), shuffle=False))
  if handcoded_expert:
    env = AlfredExpert(env, expert_type=AlfredExpertType.HANDCODED)
  return env
