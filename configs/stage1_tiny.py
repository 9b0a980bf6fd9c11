"""Stage 1 on the tiny compiler config (skill-document pretraining)."""

from configs import tiny, training


def get_config():
  c = training.with_training(tiny.get_config(), stage=1)
  c.name = "stage1_tiny"
  c.compiler.context_len = 640
  c.data.seq_len = 640
  c.data.context_len = 640
  c.train.update(steps=20, batch_size=4, accum=2, lr=1e-3, warmup_steps=2, remat=False,
                 loss_chunk=320, log_every=2, eval_every=10, eval_batch_size=4, eval_docs=4,
                 save_every=10, progress_bar=False)
  return c
