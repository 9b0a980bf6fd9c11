"""The reproduction sized for a 2-core CPU (a few hours): SmolLM2-135M with the shipped
Stage-1 compiler, Stage 2 on ALFWorld expert plays and Search-QA teacher trajectories, then
every agent comparison on subsets (24 games per ALFWorld split, 60 questions per Search-QA type).

    python -m launch.reproduce --out=workdir/reproduce --scale=cpu

Departures from the paper's protocol, all stated in the report: ALFWorld episodes stop after
`alfworld.max_steps` steps (paper 50) and answers after `max_new_tokens`; the α sweep,
composition and robustness run on the smaller subsets in `subsets`. The sizes are estimates
scaled from the CPU recipe's Stage-1 step time (about 14 s for 4 x 256 tokens), not from a
finished run of this preset; the report records each stage's wall time.
"""

import ml_collections

from configs import eval_alfworld, eval_searchqa, stage1_smollm2_135m_cpu, stage2_smollm2_135m


def get_config():
  c = ml_collections.ConfigDict()
  c.scale = "cpu"
  c.skills_dir = "skills"               # <dir>/alfworld/<skill>/, <dir>/searchqa/<skill>/
  c.stage1 = "shipped"                  # "shipped", a compiler / Stage-1 workdir, or "" (fresh)

  # Stage 2: the paper's Stage-2 recipe on the shipped compiler's shape (it must match the
  # Stage-1 compiler it starts from).
  c.stage2 = stage2_smollm2_135m.get_config()
  c.stage2.compiler = stage1_smollm2_135m_cpu.get_config().compiler
  # The compiler reads whole skills (about 800 tokens): every skill of an environment opens
  # with the same general section, so a compiler reading only the first 256 tokens (the
  # shipped compiler's limit, a limit and not a shape) would give them all one adapter.
  c.stage2.compiler.context_len = 1024
  c.stage2.data.update(seq_len=1024, context_len=1024, val_records=16)
  # Rematerialised layers: without them the step over 4 x (1024 + 1024) tokens asked XLA for a
  # 33 GB buffer of saved activations (measured), more than a 24 GB machine has.
  c.stage2.train.update(steps=60, batch_size=4, accum=1, remat=True, warmup_steps=10,
                        log_every=5, eval_every=20, eval_batch_size=4, save_every=10)
  # Longer texts (two skills concatenated, for composition) are compiled in chunks, averaged.
  c.compile_overlong = "chunk"

  c.data = ml_collections.ConfigDict(dict(
      games={"train": 120, "valid_seen": 24, "valid_unseen": 24},
      task_types=(),                    # () = all six
      seed=0,
      workers=2,
      searchqa_per_type=120,            # questions per skill type (train + test)
      searchqa_test_fraction=0.5,       # 60 test questions per type
      teacher_alfworld=120,             # expert plays (paper: 237)
      teacher_searchqa=180,             # teacher trajectories (paper: 500)
  ))

  c.alfworld = eval_alfworld.get_config()
  c.alfworld.update(num_games=24, max_steps=15, max_new_tokens=64, batch_size=8,
                    prefer_official=False)
  c.searchqa = eval_searchqa.get_config()
  c.searchqa.update(num_per_type=60, max_new_tokens=64, batch_size=8)
  # Smaller evaluation sets for the sweeps: stage -> env -> eval-config overrides.
  c.subsets = ml_collections.ConfigDict({
      "alpha": {"alfworld": {"splits": ("valid_seen",), "num_games": 12},
                "searchqa": {"num_per_type": 20}},
      "composition": {"alfworld": {"num_games": 12}, "searchqa": {"num_per_type": 20}},
      "robustness": {"alfworld": {"splits": ("valid_seen",), "num_games": 12},
                     "searchqa": {"num_per_type": 20}},
  })

  c.alphas = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)
  c.compositions = ml_collections.ConfigDict({"alfworld": ("look", "pick"),
                                              "searchqa": ("comparison", "multi_hop")})
  c.variants = ("noisy", "reordered", "plain_text", "paraphrased")  # robustness (DESIGN §6)
  c.nonsense_seed = 0
  # Cost-matched: the same steps and batch as Stage 2.
  c.plain_lora = ml_collections.ConfigDict(dict(steps=60, batch_size=4, lr=1e-3, seed=0))
  c.exposure_max_new_tokens = 256
  # Agent prompts are padded to a multiple of this many tokens, and every batch to its full
  # size: each shape compiles once (about a minute each for SmolLM2 on a CPU).
  c.prompt_bucket = 256
  return c
