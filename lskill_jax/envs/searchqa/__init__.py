"""Search-QA, offline: corpus, questions, retrieval, environment, teacher data.

The corpus and questions are built from country facts that ship in Python
packages (``countryinfo``, ``pycountry``), retrieval is BM25 (``bm25s``), and a
user corpus/retriever (e.g. wiki-18 with E5, as in the paper) plugs in through
``load_retriever(corpus_path=..., factory="module:function")``.
"""

from lskill_jax.envs.searchqa.corpus import (
  Passage,
  build_corpus,
  load_corpus,
  passage_id,
  save_corpus,
)
from lskill_jax.envs.searchqa.env import (
  AGENT_INSTRUCTIONS,
  MAX_STEPS,
  SearchQABatch,
  SearchQAEnv,
  StepResult,
  format_information,
  question_prompt,
)
from lskill_jax.envs.searchqa.facts import CountryFacts, load_country_facts
from lskill_jax.envs.searchqa.metrics import (
  Action,
  contains_answer,
  exact_match,
  extract_answer,
  extract_search,
  f1_score,
  hop_supported,
  normalize_answer,
  parse_action,
  retrieval_recall,
  summarize_scores,
)
from lskill_jax.envs.searchqa.questions import (
  SKILL_ALIASES,
  SKILL_TYPES,
  build_questions,
  comparison_questions,
  direct_questions,
  multi_hop_questions,
  read_qa_jsonl,
  save_questions,
  write_dataset,
)
from lskill_jax.envs.searchqa.retriever import (
  DEFAULT_TOPK,
  BM25Retriever,
  Retriever,
  load_retriever,
  tokenize,
)
from lskill_jax.envs.searchqa.teacher import (
  build_trajectories,
  trajectory_messages,
)

__all__ = [
  "AGENT_INSTRUCTIONS",
  "Action",
  "BM25Retriever",
  "CountryFacts",
  "DEFAULT_TOPK",
  "MAX_STEPS",
  "Passage",
  "Retriever",
  "SKILL_ALIASES",
  "SKILL_TYPES",
  "SearchQABatch",
  "SearchQAEnv",
  "StepResult",
  "build_corpus",
  "build_questions",
  "build_trajectories",
  "comparison_questions",
  "contains_answer",
  "direct_questions",
  "exact_match",
  "extract_answer",
  "extract_search",
  "f1_score",
  "format_information",
  "hop_supported",
  "load_corpus",
  "load_country_facts",
  "load_retriever",
  "multi_hop_questions",
  "normalize_answer",
  "parse_action",
  "passage_id",
  "question_prompt",
  "read_qa_jsonl",
  "retrieval_recall",
  "save_corpus",
  "save_questions",
  "write_dataset",
  "summarize_scores",
  "tokenize",
  "trajectory_messages",
]
