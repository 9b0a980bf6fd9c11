"""Evaluate agents on ALFWorld or Search-QA in several modes and write the paper's tables.

  python -m launch.evaluate --config=configs/eval_alfworld.py --model=smollm2-135m \\
      --modes=vanilla,fewshot,incontext --workdir=workdir/eval_alfworld --config.num_games=6
  python -m launch.evaluate --config=configs/eval_searchqa.py --model=smollm2-135m \\
      --compiler=CKPT --modes=vanilla,incontext,latent --alpha=0.7 --workdir=workdir/eval_sqa

Writes <workdir>/episodes.jsonl (one line per finished episode; a rerun skips finished
ones), results.json and results.md (Table 1 for ALFWorld, Table 2 for Search-QA).

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from launch import common
import lskill_jax as lsj
from lskill_jax import agents
from lskill_jax.agents import report
from lskill_jax.compiler import SkillCompiler

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/eval_alfworld.py or "
                                          "configs/eval_searchqa.py; override with --config.X=...")
flags.DEFINE_string("model", "smollm2-135m", "Backbone: an HF directory, a .gguf file or an "
                    "embedded model name.")
flags.DEFINE_string("compiler", None, "Skill-compiler checkpoint directory (latent mode).")
flags.DEFINE_list("modes", ["vanilla", "incontext", "latent"],
                  "Modes to run, from vanilla, fewshot, incontext, latent.")
flags.DEFINE_string("workdir", None, "Where episodes.jsonl and the result tables go.")
flags.DEFINE_float("alpha", 1.0, "Mount coefficient of the compiled adapters (latent mode).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Backbone weights dtype.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = _CONFIG.value
  modes = [m.strip() for m in FLAGS.modes if m.strip()]
  unknown = [m for m in modes if m not in agents.MODES]
  if unknown:
    raise app.UsageError(f"--modes: unknown {unknown}; choose from {list(agents.MODES)}.")
  if "latent" in modes and not FLAGS.compiler:
    raise app.UsageError("--modes includes latent, which needs --compiler=CHECKPOINT_DIR "
                         "(a trained skill compiler); drop latent to run the other modes.")
  mesh = common.init_runtime()
  bb = lsj.load_backbone(FLAGS.model, dtype=FLAGS.dtype, mesh=mesh)
  compiler = SkillCompiler.load(FLAGS.compiler, backbone=bb) if "latent" in modes else None
  try:
    rep = agents.evaluate_backbone(
        bb, config, modes, FLAGS.workdir, compile_fn=compiler.compile if compiler else None,
        compiler_name=FLAGS.compiler, compiler_id=compiler.checkpoint_id if compiler else None,
        alpha=FLAGS.alpha)
  except agents.DataMissingError as err:  # the message says which command makes the data
    raise SystemExit(str(err)) from None
  print(report.to_markdown(rep))


if __name__ == "__main__":
  common.run(main)
