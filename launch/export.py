"""Export an adapter to PyTorch: a PEFT adapter directory or a merged transformers checkpoint.

  python -m launch.export --adapter=adapters/heat/task --format=peft --model=smollm2-135m --out=peft/heat --alpha=0.7
  python -m launch.export --adapter=adapters/heat/task --format=merged --model=smollm2-135m --out=merged/heat

--adapter is a directory in our format (launch.compile's output, or Adapter.save); the lines
above take the heat skill's task section as compiled by launch.compile's first example.
--format=peft writes adapter_config.json + adapter_model.safetensors with --alpha folded in,
for peft.PeftModel.from_pretrained over the base model as a transformers checkpoint (for the
embedded smollm2-135m, write that with lskill_jax.export_hf; docs/api.md shows the PyTorch
side). --format=merged writes the base model with the adapter added to its weights: a
transformers checkpoint that loads without PEFT.
"""

from __future__ import annotations

from absl import flags, logging

from launch import common
import lskill_jax as lsj

flags.DEFINE_string("adapter", None, "Adapter directory (our format).", required=True)
flags.DEFINE_enum("format", "peft", ["peft", "merged"], "PEFT adapter, or base + adapter merged.")
flags.DEFINE_string("model", "smollm2-135m", "The backbone the adapter was made for.")
flags.DEFINE_string("out", None, "Output directory (written atomically).", required=True)
flags.DEFINE_float("alpha", 1.0, "Mount coefficient folded into the export.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights dtype of a merged export.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  bb = lsj.load_backbone(FLAGS.model, dtype=FLAGS.dtype)
  adapter = lsj.Adapter.load(FLAGS.adapter, backbone=bb)
  if FLAGS.format == "peft":
    adapter.export_peft(FLAGS.out, backbone=bb, alpha=FLAGS.alpha, base_model_name_or_path=FLAGS.model)
  else:
    lsj.export_hf(adapter.merged(bb, FLAGS.alpha), FLAGS.out)
  logging.info("wrote %s export of %s to %s", FLAGS.format, FLAGS.adapter, FLAGS.out)
  print(FLAGS.out)


if __name__ == "__main__":
  common.run(main)
