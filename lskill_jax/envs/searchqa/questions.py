"""Search-QA question sets for the paper's three skills, with gold answers.

Skill types (the task types of the project's ``skills/searchqa`` documents):
  * ``direct_retrieval`` -- one fact about a named entity;
  * ``multi_hop``        -- find a bridge entity first, then ask about it
                            (the paper's files call it ``multi_hop_reasoning``);
  * ``comparison``       -- look up one quantity for two entities, compare.

Every record carries ``hops``: the sub-questions an agent should search for, each
with a keyword ``query`` for it, its answer, the entity it is about, the ids of
the corpus passages stating it and a plain-sentence ``statement`` of the fact. Teacher trajectories are
built from them. Only unambiguous questions are generated: a bridge entity must
be the only one that fits, compared quantities must differ clearly.

``read_qa_jsonl`` reads the paper's test files (NQ/HotpotQA style records with
``question`` and ``golden_answers``), so the real benchmark plugs in unchanged.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import random
from collections.abc import Callable, Iterable, Sequence

from lskill_jax.envs.searchqa.corpus import (
  Passage,
  build_corpus,
  format_count,
  join_names,
  passage_id,
  save_corpus,
)
from lskill_jax.envs.searchqa.facts import CountryFacts, fold_accents, load_country_facts
from lskill_jax.envs.searchqa.metrics import contains_answer, normalize_answer
from lskill_jax.io import read_jsonl, write_jsonl

SKILL_TYPES = ("direct_retrieval", "multi_hop", "comparison")
_ID_PREFIX = {"direct_retrieval": "dr", "multi_hop": "mh", "comparison": "cmp"}

# Skill names used by the paper's data files, mapped to ours.
SKILL_ALIASES = {"multi_hop_reasoning": "multi_hop"}

# Compared quantities must differ by at least this factor, so that the answer
# does not flip with the census year behind the figures.
MIN_COMPARISON_RATIO = 1.1


class _Relation:
  """One askable fact: how to read it, ask it, state it, and where it is."""

  def __init__(
    self,
    value: Callable[[CountryFacts], tuple[str, list[str]] | None],
    ask: str,
    ask_bridged: str | None,
    state: str,
    query: str,
    aspects: tuple[str, ...],
  ):
    self.value = value  # (answer, aliases) or None when not askable
    self.ask = ask  # "... {x} ..."
    self.ask_bridged = ask_bridged  # "... whose capital is {y}"; None: not bridged
    self.state = state  # "... {x} ... {a} ..."
    self.query = query  # keyword search query, "{x} currency"
    self.aspects = aspects


def _with_folded(answer: str, aliases: Iterable[str] = ()) -> list[str]:
  out = [a for a in aliases if a and a != answer]
  folded = fold_accents(answer)
  if folded != answer and folded not in out:
    out.append(folded)
  return out


def _capital(f):
  return (f.capital, _with_folded(f.capital)) if f.capital else None


def _currency(f):
  # Several currencies (e.g. Panama: balboa and US dollar) have no single answer.
  if len(f.currencies) != 1:
    return None
  code, name = f.currencies[0]
  return name, _with_folded(name, [code])


def _language(f):
  if len(f.languages) != 1:
    return None
  return f.languages[0], _with_folded(f.languages[0])


def _population(f):
  return (format_count(f.population), []) if f.population else None


def _area(f):
  if not f.area_km2:
    return None
  a = format_count(f.area_km2)
  return a, [f"{a} square kilometres", f"{a} km2"]


def _calling_code(f):
  if len(f.calling_codes) != 1:
    return None
  code = f.calling_codes[0]
  return f"+{code}", [code]


def _demonym(f):
  # A few records hold "Serbian/Montenegrin"-style pairs: not one answer.
  if not f.demonym or "/" in f.demonym or not f.population:
    return None
  return f.demonym, _with_folded(f.demonym)


RELATIONS: dict[str, _Relation] = {
  "capital": _Relation(
    _capital,
    "What is the capital of {x}?",
    None,
    "the capital of {x} is {a}",
    "{x} capital",
    ("capital", "overview"),
  ),
  "currency": _Relation(
    _currency,
    "What currency is used in {x}?",
    "What currency is used in the country whose capital is {y}?",
    "the currency of {x} is the {a}",
    "{x} currency",
    ("currency",),
  ),
  "language": _Relation(
    _language,
    "What is the official language of {x}?",
    "What is the official language of the country whose capital is {y}?",
    "the official language of {x} is {a}",
    "{x} official language",
    ("languages",),
  ),
  "population": _Relation(
    _population,
    "What is the population of {x}?",
    "What is the population of the country whose capital is {y}?",
    "{x} has a population of {a}",
    "{x} population",
    ("population",),
  ),
  "area": _Relation(
    _area,
    "What is the total area of {x} in square kilometres?",
    None,
    "{x} covers {a} square kilometres",
    "{x} total area",
    ("area",),
  ),
  "calling_code": _Relation(
    _calling_code,
    "What is the international calling code of {x}?",
    "What is the international calling code of the country whose capital is {y}?",
    "the international calling code of {x} is {a}",
    "{x} international calling code",
    ("calling_code",),
  ),
  "demonym": _Relation(
    _demonym,
    "What are the people of {x} called?",
    None,
    "the people of {x} are called {a}",
    "{x} people called",
    ("population",),
  ),
}


def _question_id(skill_type: str, question: str) -> str:
  digest = hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]
  return f"{_ID_PREFIX[skill_type]}-{digest}"


def _hop(
  question: str, query: str, answer: str, entity: str, support: Sequence[str], statement: str
) -> dict:
  return {
    "question": question,
    "query": query,
    "answer": answer,
    "entity": entity,
    "support": list(support),
    "statement": statement,
  }


def _relation_hop(rel: _Relation, f: CountryFacts) -> dict | None:
  value = rel.value(f)
  if value is None:
    return None
  answer, _ = value
  support = [passage_id(f.slug, a) for a in rel.aspects]
  return _hop(
    rel.ask.format(x=f.name),
    rel.query.format(x=f.name),
    answer,
    f.name,
    support,
    rel.state.format(x=f.name, a=answer),
  )


def _record(skill_type: str, relation: str, question: str, golden: Sequence[str], hops: list[dict]) -> dict:
  golden_unique = list(dict.fromkeys(g for g in golden if g))
  return {
    "id": _question_id(skill_type, question),
    "question": question,
    "golden_answers": golden_unique,
    "skill_type": skill_type,
    "relation": relation,
    "hops": hops,
  }


def direct_questions(facts: Sequence[CountryFacts]) -> list[dict]:
  """All single-fact questions the facts support, one per (entity, relation)."""
  out = []
  for f in facts:
    for rel_name, rel in RELATIONS.items():
      value = rel.value(f)
      if value is None:
        continue
      hop = _relation_hop(rel, f)
      out.append(_record("direct_retrieval", rel_name, hop["question"], [value[0], *value[1]], [hop]))
  return out


def _trivial_bridge(name: str, capital: str) -> bool:
  # "Kuwait City" gives away "Kuwait": such a bridge needs no search.
  return contains_answer(capital, name) or contains_answer(name, capital)


def _capital_bridge_hop(f: CountryFacts) -> dict:
  support = [passage_id(f.slug, "capital"), passage_id(f.slug, "overview")]
  return _hop(
    f"Which country has {f.capital} as its capital?",
    f"{f.capital} capital city of which country",
    f.name,
    f.capital,
    support,
    f"{f.capital} is the capital of {f.name}",
  )


def _bridge_via_capital(facts: Sequence[CountryFacts]) -> list[dict]:
  """'<relation> of the country whose capital is Y?' where Y is one entity's capital."""
  capital_owners = collections.Counter(normalize_answer(f.capital) for f in facts if f.capital)
  out = []
  for f in facts:
    if not f.capital or capital_owners[normalize_answer(f.capital)] != 1:
      continue
    if _trivial_bridge(f.name, f.capital):
      continue
    for rel_name, rel in RELATIONS.items():
      if rel.ask_bridged is None:
        continue
      value = rel.value(f)
      if value is None:
        continue
      question = rel.ask_bridged.format(y=f.capital)
      hops = [_capital_bridge_hop(f), _relation_hop(rel, f)]
      out.append(_record("multi_hop", f"capital_to_{rel_name}", question, [value[0], *value[1]], hops))
  return out


def _neighbour_sets(facts: Sequence[CountryFacts]) -> dict[str, set[str]]:
  """Symmetric neighbour sets: a border listed by either side counts."""
  nb: dict[str, set[str]] = {f.name: set() for f in facts}
  for f in facts:
    for other in f.borders:
      if other in nb:
        nb[f.name].add(other)
        nb[other].add(f.name)
  return nb


def _border_hop(f: CountryFacts, bridge: str, conclude: bool) -> dict:
  """A 'Which countries border F?' hop whose answer is the bridge entity.

  The statement lists all of F's neighbours, as the passage does: after the
  first list the bridge is not known yet; after the second (``conclude``) it is
  the one name on both lists.
  """
  statement = f"{f.name} borders {join_names(f.borders)}"
  if conclude:
    statement += f", so the only country bordering both is {bridge}"
  return _hop(
    f"Which countries border {f.name}?",
    f"{f.name} borders",
    bridge,
    f.name,
    [passage_id(f.slug, "borders")],
    statement,
  )


def _bridge_via_borders(facts: Sequence[CountryFacts]) -> list[dict]:
  """'Capital of the country that borders both A and B?' with exactly one such country.

  Uniqueness is checked on symmetric neighbour sets, so a border recorded by
  only one side still rules a candidate in; the bridge itself must be listed
  in both A's and B's own border passages, where the agent will read it.
  """
  by_name = {f.name: f for f in facts}
  nb = _neighbour_sets(facts)
  out = []
  for a, b in itertools.combinations(sorted(n for n in by_name if by_name[n].borders), 2):
    common = nb[a] & nb[b]
    if len(common) != 1:
      continue
    (x,) = common
    fx = by_name[x]
    if not fx.capital or x not in by_name[a].borders or x not in by_name[b].borders:
      continue
    question = f"What is the capital of the country that borders both {a} and {b}?"
    hops = [
      _border_hop(by_name[a], x, conclude=False),
      _border_hop(by_name[b], x, conclude=True),
      _relation_hop(RELATIONS["capital"], fx),
    ]
    golden = [fx.capital, *_with_folded(fx.capital)]
    out.append(_record("multi_hop", "borders_to_capital", question, golden, hops))
  return out


def multi_hop_questions(facts: Sequence[CountryFacts]) -> list[dict]:
  """All bridge questions with a unique bridge entity."""
  return _bridge_via_capital(facts) + _bridge_via_borders(facts)


_COMPARISONS = {
  "population": ("Which has the larger population, {x} or {y}?", lambda f: f.population),
  "area": ("Which is larger by area, {x} or {y}?", lambda f: f.area_km2),
}


def _answer_forms(f: CountryFacts) -> list[str]:
  return [f.name, *f.aliases]


def comparison_questions(
  facts: Sequence[CountryFacts], rng: random.Random, max_per_relation: int
) -> list[dict]:
  """Two-entity comparisons, sampled from all clearly separated pairs."""
  out = []
  for rel_name, (template, quantity) in _COMPARISONS.items():
    pairs = []
    for fa, fb in itertools.combinations([f for f in facts if quantity(f)], 2):
      hi, lo = (fa, fb) if quantity(fa) >= quantity(fb) else (fb, fa)
      if quantity(hi) < MIN_COMPARISON_RATIO * quantity(lo):
        continue
      # An alias of one side that reads like the other side would make EM ambiguous.
      hi_forms = {normalize_answer(s) for s in _answer_forms(hi)}
      if hi_forms & {normalize_answer(s) for s in _answer_forms(lo)}:
        continue
      pairs.append((hi, lo))
    rng.shuffle(pairs)
    for hi, lo in pairs[:max_per_relation]:
      x, y = (hi, lo) if rng.random() < 0.5 else (lo, hi)
      question = template.format(x=x.name, y=y.name)
      rel = RELATIONS[rel_name]
      hops = [_relation_hop(rel, x), _relation_hop(rel, y)]
      out.append(_record("comparison", f"compare_{rel_name}", question, _answer_forms(hi), hops))
  return out


def _balanced_sample(records: list[dict], n: int, rng: random.Random) -> list[dict]:
  """Up to n records, drawn round-robin over relations so none dominates."""
  groups: dict[str, list[dict]] = collections.defaultdict(list)
  for rec in records:
    groups[rec["relation"]].append(rec)
  queues = []
  for rel in sorted(groups):
    g = groups[rel]
    rng.shuffle(g)
    queues.append(collections.deque(g))
  out: list[dict] = []
  while len(out) < n and any(queues):
    for q in queues:
      if q and len(out) < n:
        out.append(q.popleft())
  return out


def build_questions(
  facts: Sequence[CountryFacts],
  seed: int = 0,
  per_type: int = 600,
  test_fraction: float = 0.2,
) -> dict[str, list[dict]]:
  """Deterministic train/test question sets, balanced over the three skills.

  Args:
    facts: the records the corpus was built from.
    seed: fixes sampling and the split.
    per_type: questions per skill type (fewer if the facts allow fewer).
    test_fraction: share of each skill type held out for testing.

  Returns:
    ``{"train": [...], "test": [...]}``, each sorted by skill type then id.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  facts = sorted(facts, key=lambda f: f.slug)
  rng = random.Random(seed)
  pools = {
    "direct_retrieval": direct_questions(facts),
    "multi_hop": multi_hop_questions(facts),
    # Comparisons are sampled from ~10^4 pairs: draw enough per relation.
    "comparison": comparison_questions(facts, rng, max_per_relation=per_type),
  }
  splits: dict[str, list[dict]] = {"train": [], "test": []}
  for skill_type in SKILL_TYPES:
    pool = list({rec["question"]: rec for rec in pools[skill_type]}.values())
    pool.sort(key=lambda r: r["id"])
    chosen = _balanced_sample(pool, per_type, rng)
    rng.shuffle(chosen)
    n_test = max(1, round(len(chosen) * test_fraction)) if chosen else 0
    splits["test"].extend(chosen[:n_test])
    splits["train"].extend(chosen[n_test:])
  order = {t: i for i, t in enumerate(SKILL_TYPES)}
  for name in splits:
    splits[name].sort(key=lambda r: (order[r["skill_type"]], r["id"]))
  return splits


def save_questions(path: str, records: Iterable[dict]) -> None:
  """Writes question records as JSON lines (atomic)."""
  write_jsonl(path, records)


def write_dataset(out_dir: str, *, seed: int = 0, per_type: int = 600, test_fraction: float = 0.2
                  ) -> tuple[list[CountryFacts], list[Passage], dict[str, list[dict]]]:
  """Builds the corpus and the question splits from the facts that ship in packages and writes
  them under out_dir (corpus.jsonl, <split>.jsonl). Returns (facts, passages, splits)."""
  facts = load_country_facts()
  passages = build_corpus(facts)
  splits = build_questions(facts, seed=seed, per_type=per_type, test_fraction=test_fraction)
  save_corpus(os.path.join(out_dir, "corpus.jsonl"), passages)
  for name, records in splits.items():
    save_questions(os.path.join(out_dir, f"{name}.jsonl"), records)
  return facts, passages, splits


def _skill_type(name: str) -> str:
  return SKILL_ALIASES.get(str(name), str(name))


def read_qa_jsonl(path: str, default_skill_type: str = "direct_retrieval") -> list[dict]:
  """Reads QA records in our format or the paper's test format.

  The paper's lines look like ``{"id", "dataset", "skill", "question",
  "golden_answers"}`` (``golden_answers`` may be a single string); ours use
  ``skill_type`` and add ``hops``. Records come back in our format, with
  the paper's skill names mapped to ours (``SKILL_ALIASES``); records without
  a skill get ``default_skill_type``, as the paper routes them.
  """
  out = []
  for n, rec in enumerate(read_jsonl(path)):
    if "question" not in rec:
      raise ValueError(f"{path}: record {n} has no 'question' field.")
    golden = rec.get("golden_answers", rec.get("answers", rec.get("answer")))
    if golden is None:
      raise ValueError(f"{path}: record {n} has no 'golden_answers' (or 'answers'/'answer') field.")
    if isinstance(golden, str):
      golden = [golden]
    item = {
      "id": str(rec.get("id", n)),
      "question": str(rec["question"]).strip(),
      "golden_answers": [str(g) for g in golden],
      "skill_type": _skill_type(rec.get("skill_type") or rec.get("skill") or default_skill_type),
      "hops": list(rec.get("hops") or []),
    }
    for extra in ("dataset", "relation"):
      if extra in rec:
        item[extra] = rec[extra]
    out.append(item)
  return out
