"""Search-QA evaluation (the paper's Table 2): EM per skill type.

    python -m launch.evaluate --config=configs/eval_searchqa.py --model=smollm2-135m \
        --modes=vanilla,fewshot,incontext --workdir=workdir/eval_searchqa

Questions and corpus come from `data_dir` (made by `python -m launch.build_searchqa
--out_dir=DIR`); the paper's test files in the same layout work too.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.env = "searchqa"
  c.data_dir = "workdir/searchqa"           # corpus.jsonl, train.jsonl, test.jsonl
  c.split = "test"
  c.num_per_type = -1                       # questions per skill type; -1 = all
  c.skill_types = ()                        # () = direct_retrieval, multi_hop, comparison
  c.skill_dir = "skills/searchqa"
  c.fewshot_split = "train"                 # where the teacher demonstrations come from
  c.retriever_factory = ""                  # '' = BM25; or 'package.module:function'
  c.topk = 3
  c.max_steps = 4
  c.invalid_ends_episode = True             # as in the paper: a turn without a tag ends it
  c.max_new_tokens = 256
  c.batch_size = 8
  return c
