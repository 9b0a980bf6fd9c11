"""Stage 1 on the smollm2_135m compiler config (skill-document pretraining)."""

from configs import smollm2_135m, training


def get_config():
  c = training.with_training(smollm2_135m.get_config(), stage=1)
  c.name = "stage1_smollm2_135m"
  # Sized for one accelerator (or a patient CPU): 1024-token packed examples.
  c.data.seq_len = 1024
  c.data.context_len = 1024
  c.train.update(steps=600, batch_size=4, accum=2, lr=1e-4, warmup_steps=30, log_every=5,
                 eval_every=50, eval_batch_size=4, eval_docs=16, save_every=50)
  return c
