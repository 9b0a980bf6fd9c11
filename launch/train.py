"""Train the skill compiler (Stage 1 or Stage 2).

  python -m launch.train --config=configs/stage1_smollm2_135m.py --workdir=workdir/stage1
  python -m launch.train --config=configs/stage2_smollm2_135m.py --workdir=workdir/stage2 \\
      --config.init_from=workdir/stage1

SIGTERM or Ctrl-C saves the step under way and stops; re-running the same command resumes
from the latest checkpoint in --workdir. A rerun whose
config differs from the run's (WORKDIR/config.json) is refused before anything is written,
naming the fields; intended changes are named with --allow_changes, e.g. a new schedule:
  python -m launch.train ... --config.train.lr=2e-5 --allow_changes=train.lr
A larger train.steps and the logging / validation / saving frequencies may always change.

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common
from lskill_jax.training.trainer import train

config_flags.DEFINE_config_file("config", None, "Training config (configs/stage{1,2}_*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl and TensorBoard logs go here.",
                    required=True)
flags.DEFINE_integer("stop_after", None, "Stop after this many steps in total, saving that step "
                     "(the schedule still runs to config.train.steps on resume).", lower_bound=1)
flags.DEFINE_list("allow_changes", [], "Config fields (dotted, e.g. train.lr,data.train, or a "
                  "section such as data) a resume may change from the run's config.json.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required")
  if config.get("mesh") and not FLAGS.mesh:
    FLAGS.mesh = config.mesh
  mesh = common.init_runtime()
  result = train(config, FLAGS.workdir, mesh=mesh, max_steps=FLAGS.stop_after,
                 allow_changes=FLAGS.allow_changes)
  result.pop("state", None)
  logging.info("finished at step %d", result["step"])
  print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=1))


if __name__ == "__main__":
  common.run(main)
