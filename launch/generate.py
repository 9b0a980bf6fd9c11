"""Answer prompts with a backbone.

  python -m launch.generate --model=smollm2-135m --prompt="What is the capital of France?"
"""

from __future__ import annotations

from absl import flags

from launch import common
import lskill_jax as lsj

flags.DEFINE_string("model", "smollm2-135m", "HF directory, .gguf file, or embedded model name.")
flags.DEFINE_multi_string("prompt", ["What is the capital of France?"], "Prompt(s); repeat for a batch.")
flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate per prompt.", lower_bound=1)
flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
flags.DEFINE_bool("chat", True, "Apply the chat template (thinking disabled).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  mesh = common.init_runtime()
  bb = lsj.load_backbone(FLAGS.model, dtype=FLAGS.dtype, mesh=mesh)
  answers = lsj.generate(bb, FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens,
                         temperature=FLAGS.temperature, top_p=FLAGS.top_p, seed=FLAGS.seed,
                         chat=FLAGS.chat)
  for answer in answers:
    print(answer)


if __name__ == "__main__":
  common.run(main)
