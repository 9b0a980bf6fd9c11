"""ALFWorld, offline: generated games in the official layout, played by ALFWorld's engine.

`gamegen` builds games for the six task types from what ships in the `alfworld` package
(PDDL domain, grammar, object/receptacle tables, floor-plan layouts); `env` plays a split
through `AlfredTWEnv` (official data in `$ALFWORLD_DATA` is preferred when present) and
replays experts to produce teacher trajectories.
"""

from lskill_jax.envs.alfworld.env import (
  ALFWORLD_DATA_VAR,
  EXPERTS,
  AlfworldEnv,
  ExpertStep,
  ExpertTrajectory,
  GameSet,
  Replay,
  alfred_config,
  data_source,
  expert_trajectories,
  load_games,
  replay_walkthroughs,
  resolve_split_dir,
  stored_walkthrough,
  task_type_of,
  traj_data,
)
from lskill_jax.envs.alfworld.gamegen import (
  DATA_DIRNAME,
  SPLITS,
  TASK_SHORT_NAMES,
  TASK_TYPES,
  GameChecker,
  GeneratedGame,
  Scene,
  TaskSpec,
  candidate_tasks,
  generate_games,
  generate_split,
  get_scene,
  is_unseen_pair,
  load_scene,
  oracle_plan,
  split_candidates,
  split_scenes,
)
