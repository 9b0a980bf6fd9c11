"""Stage 2 on the qwen3_8b compiler config (trajectory-supervised fine-tuning)."""

from configs import qwen3_8b, training


def get_config():
  c = training.with_training(qwen3_8b.get_config(), stage=2)
  c.name = "stage2_qwen3_8b"
  c.data.train = "skill_ift/train.json"
  c.train.update(batch_size=32, accum=8, steps=200, warmup_steps=20)
  c.mesh = "data=1,fsdp=-1,tensor=1"
  return c
