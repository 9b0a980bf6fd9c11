"""The LatentSkill reproduction in one resumable command: Stage 2, the agents with controls,
α, composition, geometry, robustness and exposure, written up in OUT/report.md.

  python -m launch.reproduce --out=workdir/reproduce                 # --scale=cpu (2-core CPU, a few hours)
  python -m launch.reproduce --out=/tmp/repro --scale=tiny           # every stage in minutes (random model)
  python -m launch.reproduce --out=runs/repro --scale=paper --model=path/to/Qwen3-8B --stage1=CKPT

Stages, in order, each under OUT/<stage>/ with a DONE.json marker: data, stage2, plain_lora,
agents, alpha, composition, geometry, robustness, report. Rerunning the same command skips
finished stages and resumes the first unfinished one (Stage 2 from its checkpoints, the
evaluations from their episodes.jsonl). The scale presets are configs/reproduce_<scale>.py;
override a field with --config.X=Y only on a fresh --out (a changed config is refused).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from launch import common
from lskill_jax import reproduce

SCALES = ("tiny", "cpu", "paper")
flags.DEFINE_string("out", None, "Output folder: every stage's files, the markers, report.md.")
flags.DEFINE_enum("scale", "cpu", SCALES, "Preset: configs/reproduce_<scale>.py.")
flags.DEFINE_string("model", None, "Backbone source (HF directory, .gguf or embedded name) "
                    "instead of the preset's; the paper scale needs it.")
flags.DEFINE_string("stage1", None, "Stage-1 compiler to start Stage 2 from (a run's workdir or "
                    "a compiler directory); default: the preset's (the shipped compiler).")
flags.DEFINE_list("stages", [], f"Run only these stages (earlier ones must be done): "
                  f"{','.join(reproduce.STAGE_NAMES)}.")
flags.DEFINE_bool("progress", True, "Progress bars for the evaluations.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def load_config(scale: str, model: str | None = None, stage1: str | None = None):
  """The preset of `scale` with the flags' overrides."""
  import importlib
  config = importlib.import_module(f"configs.reproduce_{scale}").get_config()
  if model:
    if config.stage2.model == "random":
      raise app.UsageError(f"--model: the {scale} scale uses a random backbone; drop --model.")
    config.stage2.model = model
  if stage1 is not None:
    if stage1 and not os.path.exists(stage1):
      raise app.UsageError(f"--stage1={stage1!r}: no such checkpoint directory.")
    config.stage1 = stage1
  if not config.stage2.model:
    raise app.UsageError(f"--scale={scale} names no backbone; pass --model=PATH.")
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; flags start with --.")
  config = load_config(FLAGS.scale, FLAGS.model, FLAGS.stage1)
  unknown = sorted(set(FLAGS.stages) - set(reproduce.STAGE_NAMES))
  if unknown:
    raise app.UsageError(f"--stages: unknown {unknown}; choose from {list(reproduce.STAGE_NAMES)}.")
  print(f"reproduce: scale {config.scale}, backbone {config.stage2.model}, out {FLAGS.out}",
        flush=True)
  mesh = common.init_runtime()
  command = " ".join(["python -m launch.reproduce"] + sys.argv[1:])
  try:
    ran = reproduce.run(FLAGS.out, config, command=command, mesh=mesh, only=FLAGS.stages or None,
                        show_progress=FLAGS.progress)
  except reproduce.ReproduceError as err:
    common.fail(str(err))
  print(f"ran: {', '.join(ran) or 'nothing (every stage was done)'}; report: "
        f"{os.path.join(FLAGS.out, 'report.md')}")


if __name__ == "__main__":
  common.run(main)
