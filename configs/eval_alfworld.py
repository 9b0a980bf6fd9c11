"""ALFWorld evaluation (the paper's Table 1): valid_seen and valid_unseen.

    python -m launch.evaluate --config=configs/eval_alfworld.py --model=smollm2-135m \
        --modes=vanilla,fewshot,incontext --workdir=workdir/eval_alfworld

Games come from `data_root` (made by `python -m launch.make_alfworld_games --out=DIR`), or
from the official data when $ALFWORLD_DATA holds it and `prefer_official` is set.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.env = "alfworld"
  c.data_root = "workdir/alfworld"          # root holding json_2.1.1/<split>/...
  c.prefer_official = True                  # official games under $ALFWORLD_DATA win
  c.splits = ("valid_seen", "valid_unseen")
  c.num_games = -1                          # per split; -1 = all (140 / 134 officially)
  c.task_types = ()                         # () = all six
  c.skill_dir = "skills/alfworld"
  c.fewshot_split = "train"                 # where the demonstrations' expert plays come from
  c.max_steps = 50
  c.history_length = 5                      # (observation, action) pairs shown
  c.obs_chars = 300                         # past observations are cut to this many characters
  c.fallback_action = "look"                # sent when the output has no admissible action
  c.max_new_tokens = 256
  c.batch_size = 8                          # episodes stepped together
  return c
