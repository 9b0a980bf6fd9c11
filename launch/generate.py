"""Answer prompts with a backbone, with and without a compiled skill mounted.

  python -m launch.generate --model=smollm2-135m --skill=skills/alfworld/heat/task.md \\
      --prompt="Your task is to: heat some egg and put it in diningtable. What do you do first?"
  python -m launch.generate --model=smollm2-135m --prompt="What is the capital of France?"
  python -m launch.generate --model=smollm2-135m --adapter=adapters/heat/task --prompt="..."

--skill compiles a skill document with --compiler (default: the trained compiler shipped for
--model) and prints each answer without the skill and with its adapter mounted at --alpha.
--adapter mounts an adapter saved by launch.compile instead.

Shared flags (listed by --helpfull): --mesh=data=D,fsdp=F,tensor=T spreads the work over a
device mesh (one axis may be -1: the remaining devices); --distributed joins one JAX job
over several hosts, the same command on each (docs/tpu.md).
"""

from __future__ import annotations

from absl import flags

from launch import common
import lskill_jax as lsj
from lskill_jax.data.documents import read_skill

flags.DEFINE_string("model", "smollm2-135m", "HF directory, .gguf file, or embedded model name.")
flags.DEFINE_multi_string("prompt", ["What is the capital of France?"], "Prompt(s); repeat for a batch.")
flags.DEFINE_string("skill", None, "A skill document to compile and mount (text, Markdown or SKILL.md).")
flags.DEFINE_string("compiler", None, "Trained compiler directory for --skill (default: the shipped one).")
flags.DEFINE_string("adapter", None, "A saved adapter directory to mount (instead of --skill).")
flags.DEFINE_float("alpha", 1.0, "Mount coefficient of the skill's adapter.")
flags.DEFINE_enum("overlong", "chunk", ["error", "truncate", "chunk"],
                  "A skill over the compiler's context: refuse, keep its start, or average chunks.")
flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate per prompt.", lower_bound=1)
flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
flags.DEFINE_bool("chat", True, "Apply the chat template (thinking disabled).")
FLAGS = flags.FLAGS


def skill_adapter(bb: lsj.Backbone) -> lsj.Adapter | None:
  """The adapter asked for by --skill or --adapter, or None."""
  if FLAGS.adapter:
    return lsj.Adapter.load(FLAGS.adapter, backbone=bb)
  if not FLAGS.skill:
    return None
  comp = (lsj.SkillCompiler.pretrained(bb) if FLAGS.compiler is None
          else lsj.SkillCompiler.load(FLAGS.compiler, bb))
  adapter, = comp.compile([read_skill(FLAGS.skill)], overlong=FLAGS.overlong)
  return adapter


def main(argv):
  del argv
  if FLAGS.skill and FLAGS.adapter:
    common.fail("give --skill (compiled now) or --adapter (compiled before), not both.")
  mesh = common.init_runtime()
  bb = lsj.load_backbone(FLAGS.model, dtype=FLAGS.dtype, mesh=mesh)
  adapter = skill_adapter(bb)
  kwargs = dict(max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                top_p=FLAGS.top_p, seed=FLAGS.seed, chat=FLAGS.chat)
  plain = lsj.generate(bb, FLAGS.prompt, **kwargs)
  if adapter is None:
    for answer in plain:
      print(answer)
    return
  mounted = lsj.generate(bb, FLAGS.prompt, adapter=adapter, alpha=FLAGS.alpha, **kwargs)
  name = FLAGS.skill or FLAGS.adapter
  for prompt, without, with_skill in zip(FLAGS.prompt, plain, mounted):
    print(f"prompt: {prompt}\n\n--- without the skill\n{without.strip()}\n\n"
          f"--- with {name} (alpha {FLAGS.alpha:g})\n{with_skill.strip()}\n")


if __name__ == "__main__":
  common.run(main)
