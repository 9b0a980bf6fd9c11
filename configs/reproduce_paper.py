"""The reproduction at the paper's sizes (an accelerator; Qwen3-8B): all 140 / 134 ALFWorld
validation games with 50 steps, 237 + 500 teacher trajectories, the full Search-QA test split.

    python -m launch.reproduce --out=runs/reproduce --scale=paper --model=path/to/Qwen3-8B \\
        --stage1=path/to/stage1_compiler

No compiler ships for Qwen3-8B: --stage1 names the Stage-1 run (or a converted checkpoint of
the authors', `launch.convert`).
"""

from configs import reproduce_cpu, stage2_qwen3_8b


def get_config():
  c = reproduce_cpu.get_config()
  c.scale = "paper"
  c.stage2 = stage2_qwen3_8b.get_config()
  c.stage2.model = ""                   # --model=PATH
  c.data.update(games={"train": 3553, "valid_seen": 140, "valid_unseen": 134}, workers=8,
                searchqa_per_type=600, searchqa_test_fraction=0.2,
                teacher_alfworld=237, teacher_searchqa=500)
  c.alfworld.update(num_games=-1, max_steps=50, max_new_tokens=256, batch_size=32)
  c.searchqa.update(num_per_type=-1, max_new_tokens=256, batch_size=32)
  for stage in ("alpha", "composition", "robustness"):
    c.subsets[stage] = {}
  c.plain_lora.update(steps=200, batch_size=32, lr=1e-4)
  return c
