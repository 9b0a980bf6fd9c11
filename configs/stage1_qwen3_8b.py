"""Stage 1 on the qwen3_8b compiler config (skill-document pretraining)."""

from configs import qwen3_8b, training


def get_config():
  c = training.with_training(qwen3_8b.get_config(), stage=1)
  c.name = "stage1_qwen3_8b"
  # The paper: 4096-token packed examples, 64 per step (8 hosts x 8 accumulation), 10 epochs.
  c.data.train = "skill_pretrain/train.jsonl"
  c.data.val = "skill_pretrain/val.jsonl"
  c.train.update(batch_size=64, accum=8, steps=26000)
  c.mesh = "data=1,fsdp=-1,tensor=1"
  return c
