"""Compile skill documents into adapters, or describe a compiler's geometry.

  python -m launch.compile --model=smollm2-135m --skill=skills/alfworld/heat --out=adapters/heat --overlong=chunk
  python -m launch.compile --compiler=CKPT_OR_CONFIG --model=SOURCE --skill=FILE_OR_DIR --out=DIR [--format=ours|peft]
  python -m launch.compile --describe --config=configs/qwen3_8b.py

--compiler defaults to the trained compiler that ships for the backbone (one ships for
smollm2-135m); otherwise it is a trained checkpoint directory, or a config file
(configs/<name>.py) for a freshly initialised compiler (useful to try the pipeline).
Each skill becomes OUT/<relative path without suffix>/ (our format or PEFT); where two skills
would share that name (task.md and task.txt) both keep their suffix (OUT/task.md/,
OUT/task.txt/) and the log says so. A document that cannot be read or compiled is reported
and skipped; nothing is written for it and the others still compile.

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags, logging
import jax
from ml_collections import config_flags
from tqdm import tqdm

from launch import common
import lskill_jax as lsj
from lskill_jax.backbone.config import from_hf_config
from lskill_jax.compiler import hypernet, shipped
from lskill_jax.compiler.skill_compiler import spec_from_config
from lskill_jax.data.documents import DocumentError, find_skill_files, read_skill

config_flags.DEFINE_config_file("config", None, "Compiler config (configs/<name>.py) for --describe.")
flags.DEFINE_bool("describe", False, "Print the compiler geometry and parameter counts; allocates nothing.")
flags.DEFINE_string("compiler", None, "Trained compiler checkpoint dir, or a configs/<name>.py file "
                    "(default: the compiler shipped for --model).")
flags.DEFINE_string("model", None, "Backbone source (default: --config's model, else smollm2-135m).")
flags.DEFINE_string("skill", None, "A skill file or a directory of them.")
flags.DEFINE_string("out", None, "Output directory: one adapter folder per skill file.")
flags.DEFINE_enum("format", "ours", ["ours", "peft"], "Adapter file format.")
flags.DEFINE_enum("overlong", "error", ["error", "truncate", "chunk"], "Documents over the compiler's context budget: skip them (error), keep their first tokens (truncate), or compile their chunks and average the adapters exactly (chunk).")
flags.DEFINE_float("alpha", 1.0, "Mount coefficient folded into PEFT exports.")
flags.DEFINE_integer("batch_size", 8, "Documents per compile batch.", lower_bound=1)
FLAGS = flags.FLAGS


def _count(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def describe(config) -> str:
  """The geometry and trainable parameter counts of a config's compiler (jax.eval_shape only)."""
  if config.backbone_shape:
    bcfg = from_hf_config(dict(config.backbone_shape))
  else:
    bcfg = lsj.load_backbone(config.model, tokenizer=False).config
  spec = spec_from_config(config, bcfg)
  g = spec.geometry
  shapes = jax.eval_shape(lambda: hypernet.init(jax.random.key(0), spec))
  gen = shapes["generator"]
  tables = _count(gen["layer_pe"]) + _count(gen["token_pe"])
  groups = {"generator": _count(gen) - tables, "position tables": tables,
            "memory tokens": _count(shapes["memory"]), "MetaLoRA": _count(shapes["metalora"])}
  lines = [f"compiler {config.get('name', '')}: backbone {bcfg.model_type}, {bcfg.num_layers} layers, "
           f"hidden {bcfg.hidden_size}",
           f"  LoRA rank r = {g.rank}, targets {','.join(g.targets)}, scale {spec.scale}",
           f"  numbers per layer P = {g.per_layer:,}",
           f"  memory tokens M = ceil(P / H) = {g.memory_tokens} ({g.dropped_per_layer} numbers dropped per layer)",
           f"  numbers per adapter = {g.per_adapter:,}",
           f"  context budget = {spec.context_len} tokens + {g.memory_tokens} memory slots",
           "  trainable parameters:"]
  lines += [f"    {k:16s} {v:>15,}" for k, v in groups.items()]
  lines.append(f"    {'total':16s} {sum(groups.values()):>15,}")
  return "\n".join(lines)


def _load_compiler(bb):
  src = FLAGS.compiler
  if src is None:
    comp = lsj.SkillCompiler.pretrained(bb)
    logging.info("using the shipped compiler for %s (%s)", bb.source, shipped.find_for(bb))
    return comp
  if src.endswith(".py"):
    return lsj.SkillCompiler.create(bb, _config_from_file(src), seed=0)
  return lsj.SkillCompiler.load(src, backbone=bb)


def _config_from_file(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("compiler_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def output_names(files: list[str], root: str) -> dict[str, str]:
  """File -> output folder (relative to --out): its path without suffix, unless that would
  collide with another's (also only in case, or as its parent folder), then with it."""
  def clashes(names):
    low = [n.lower() for n in names]
    parents = {p for n in low for p in _ancestors(n)}
    return {n for n, l in zip(names, low) if low.count(l) > 1 or l in parents}

  names = [os.path.splitext(os.path.relpath(f, root))[0] for f in files]
  bad = clashes(names)
  names = [os.path.relpath(f, root) if n in bad else n for f, n in zip(files, names)]
  for f, n in zip(files, names):
    if n != os.path.splitext(os.path.relpath(f, root))[0]:
      logging.warning("%s goes to %s/: another skill would have the same output folder.", f, n)
  still = clashes(names)
  if still:
    raise flags.ValidationError(
        f"skills {sorted(still)} map to clashing output folders even with their suffixes "
        "(names differing only in case?); rename them.")
  return dict(zip(files, names))


def _ancestors(name: str):
  while (name := os.path.dirname(name)):
    yield name


def _check_writable(out: str) -> None:
  """Fails before any work if --out cannot take the adapters."""
  try:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
      pass
  except OSError as e:
    common.fail(f"--out={out}: cannot write there ({e.strerror or e}); choose a writable folder.")


def main(argv):
  del argv
  if FLAGS.describe:
    if FLAGS.config is None:
      raise app.UsageError("--describe needs --config=configs/<name>.py")
    print(describe(FLAGS.config))
    return
  for name in ("skill", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required to compile")
  files = find_skill_files(FLAGS.skill)
  root = FLAGS.skill if os.path.isdir(FLAGS.skill) else os.path.dirname(FLAGS.skill) or "."
  names = output_names(files, root)
  _check_writable(FLAGS.out)
  mesh = common.init_runtime()
  if FLAGS.model:
    model = FLAGS.model
    bb = lsj.load_backbone(model, mesh=mesh)
  elif FLAGS.config is not None:
    model = FLAGS.config.model
    bb = lsj.backbone_from_config(FLAGS.config, mesh=mesh)
  else:
    model = "smollm2-135m"
    bb = lsj.load_backbone(model, mesh=mesh)
  comp = _load_compiler(bb)
  failed = 0
  bar = tqdm(total=len(files), unit="skill", desc="compiling", disable=len(files) < 2)
  for start in range(0, len(files), FLAGS.batch_size):
    chunk = files[start:start + FLAGS.batch_size]
    docs = []
    for f in chunk:
      try:
        docs.append(read_skill(f))
      except DocumentError as e:
        docs.append(e)
    good = [d for d in docs if not isinstance(d, DocumentError)]
    compiled = iter(comp.compile_documents(good, overlong=FLAGS.overlong,
                                           batch_size=FLAGS.batch_size).results)
    for f, d in zip(chunk, docs):
      result = d if isinstance(d, DocumentError) else next(compiled)
      if isinstance(result, DocumentError):
        failed += 1
        logging.error("skipped %s: %s", f, result)
      else:
        out = os.path.join(FLAGS.out, names[f])
        try:
          if FLAGS.format == "ours":
            result.save(out)
          else:
            result.export_peft(out, backbone=bb, alpha=FLAGS.alpha, base_model_name_or_path=model)
        except OSError as e:
          failed += 1
          logging.error("skipped %s: cannot write %s (%s)", f, out, e.strerror or e)
      bar.update(1)
  bar.close()
  print(f"compiled {len(files) - failed} of {len(files)} skills into {FLAGS.out}"
        + (f"; {failed} failed (see the log)" if failed else ""))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  common.run(main)
