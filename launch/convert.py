"""Convert compilers between the LatentSkill authors' checkpoint layout and ours.

  python -m launch.convert --from_latentskill=DIR --latentskill_config=YAML --model=SOURCE --out=WORKDIR
  python -m launch.convert --to_latentskill=CKPT --model=SOURCE --out=DIR [--global_step=N]

--from_latentskill reads their checkpoint directory (hypernetwork.pth, metalora.pth,
mem_tokens.pt) with the YAML config it was trained with and writes compiler.json + params/
(load it with SkillCompiler.load or pass it to launch.compile --compiler). --to_latentskill
writes one of our compilers in their layout, with the config YAML their code loads. Only the
backbone's config.json is read, not its weights. See docs/latentskill_interop.md.
"""

from __future__ import annotations

import os

from absl import flags, logging

from launch import common
import lskill_jax as lsj
from lskill_jax.backbone.config import from_hf_config
from lskill_jax.backbone.loading import resolve_source
from lskill_jax.compiler import latentskill_io
from lskill_jax.io import atomic_dir
from lskill_jax.weights import gguf_file, hf_dir

flags.DEFINE_string("from_latentskill", None, "Their checkpoint directory to import.")
flags.DEFINE_string("latentskill_config", None, "Their YAML config the checkpoint was trained with "
                    "(with --from_latentskill).")
flags.DEFINE_string("to_latentskill", None, "Our compiler checkpoint to export in their layout.")
flags.DEFINE_string("model", None, "The backbone the compiler is for (a transformers directory "
                    "for Qwen3; only its config is read).", required=True)
flags.DEFINE_string("out", None, "Output directory (written atomically).", required=True)
flags.DEFINE_integer("context_len", latentskill_io.CONTEXT_LEN,
                     "Longest document the imported compiler accepts (their evaluation cuts at 4096).")
flags.DEFINE_integer("global_step", 0, "Step recorded in their trainer_state.json (export).")
FLAGS = flags.FLAGS


def backbone_shell(source: str) -> lsj.Backbone:
  """A Backbone with the config of `source` and no weights: conversion needs shapes only."""
  path = resolve_source(source)
  raw = hf_dir.read_config(path) if os.path.isdir(path) else gguf_file.read_config(path)
  return lsj.Backbone(config=from_hf_config(raw), params={}, source=source)


def main(argv):
  del argv
  if bool(FLAGS.from_latentskill) == bool(FLAGS.to_latentskill):
    raise flags.ValidationError("pass exactly one of --from_latentskill=DIR or --to_latentskill=CKPT.")
  if FLAGS.from_latentskill and not FLAGS.latentskill_config:
    raise flags.ValidationError("--from_latentskill needs --latentskill_config=YAML: their "
                                "checkpoints do not record the generator's settings.")
  bb = backbone_shell(FLAGS.model)
  if FLAGS.from_latentskill:
    comp = lsj.SkillCompiler.from_latentskill(FLAGS.from_latentskill, bb, FLAGS.latentskill_config,
                                              context_len=FLAGS.context_len)
    with atomic_dir(FLAGS.out) as tmp:
      comp.save(tmp)
  else:
    comp = lsj.SkillCompiler.load(FLAGS.to_latentskill, bb)
    comp.export_latentskill(FLAGS.out, global_step=FLAGS.global_step)
  logging.info("wrote %s", FLAGS.out)
  print(FLAGS.out)


if __name__ == "__main__":
  common.run(main)
