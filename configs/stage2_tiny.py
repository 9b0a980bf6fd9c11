"""Stage 2 on the tiny compiler config (trajectory-supervised fine-tuning)."""

from configs import tiny, training


def get_config():
  c = training.with_training(tiny.get_config(), stage=2)
  c.name = "stage2_tiny"
  c.data.seq_len = 256
  c.data.context_len = 128
  c.data.train = ""  # set by the caller (tests write a small skill_ift/train.json)
  c.data.val_records = 2
  c.train.update(steps=6, batch_size=2, accum=1, lr=1e-3, warmup_steps=1, remat=False,
                 loss_chunk=128, log_every=2, eval_every=3, eval_batch_size=2, save_every=3,
                 progress_bar=False)
  return c
