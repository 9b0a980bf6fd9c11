"""Stage 2 on the smollm2_135m compiler config (trajectory-supervised fine-tuning)."""

from configs import smollm2_135m, training


def get_config():
  c = training.with_training(smollm2_135m.get_config(), stage=2)
  c.name = "stage2_smollm2_135m"
  c.data.seq_len = 2048
  c.data.context_len = 1024
  c.data.train = "workdir/skill_ift/train.json"
  c.train.update(steps=300, batch_size=4, accum=4, log_every=5, eval_every=50, save_every=50)
  return c
