"""The reproduction on the tiny random backbone (configs/tiny.py): every stage end to end in a
couple of minutes, for tests. Its numbers mean nothing; its tables have the real layout.

    python -m launch.reproduce --out=/tmp/repro --scale=tiny
"""

from configs import reproduce_cpu, stage2_tiny


def get_config():
  c = reproduce_cpu.get_config()
  c.scale = "tiny"
  c.stage1 = ""                       # no compiler ships for a random backbone: start fresh
  c.stage2 = stage2_tiny.get_config()
  # A whole first ALFWorld turn (the prompt) must fit, or its conversation has no target.
  c.stage2.data.update(seq_len=1024, val_records=2)
  # Whole skills (about 1,300 tokens of the small tokenizer), as at the other scales.
  c.stage2.compiler.context_len = 1536
  c.stage2.data.context_len = 1536
  c.stage2.train.update(steps=2, save_every=2, eval_every=0, log_every=1,
                        async_checkpointing=False)
  # One task type keeps game generation short; the composition and controls still run.
  c.data.update(games={"train": 1, "valid_seen": 1, "valid_unseen": 1},
                task_types=("pick_and_place_simple",), searchqa_per_type=4,
                searchqa_test_fraction=0.25, teacher_alfworld=1, teacher_searchqa=3)
  for env in ("alfworld", "searchqa"):
    c[env].update(max_steps=1, max_new_tokens=6, batch_size=4)
  c.alfworld.num_games = 1
  c.searchqa.num_per_type = 1
  c.alphas = (0.0, 1.5)
  c.variants = ("noisy",)
  c.plain_lora.update(steps=2, batch_size=2)
  c.exposure_max_new_tokens = 8
  c.prompt_bucket = 1024            # two prompt shapes in all: compiling dominates at this size
  for stage in ("alpha", "composition", "robustness"):
    c.subsets[stage] = {}
  return c
