"""The offline Search-QA passage corpus: short encyclopedia-style passages.

Each entity gets several passages with one or two facts each (capital city,
demographics, geography, economy, languages, telephone numbers, ...), titled
the way encyclopedia articles are ("Economy of France"). Spreading the facts
over many passages means an agent has to search for the right one, as it does
over wiki-18 in the paper.

Passages are plain dicts ``{"id", "title", "text"}``; the same shape is read
back from JSONL, so a user corpus in that format can replace ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypedDict

from lskill_jax.envs.searchqa.facts import CountryFacts, load_country_facts
from lskill_jax.io import read_jsonl, write_jsonl

# Aspects, in the order they are written per entity. Questions refer to passages
# through ``passage_id(slug, aspect)``, so these names are part of the format.
ASPECTS = (
  "overview",
  "capital",
  "population",
  "area",
  "borders",
  "currency",
  "languages",
  "calling_code",
  "divisions",
  "timezones",
)

# Long province lists would dominate BM25 length normalisation; a dozen names
# is enough for them to act as realistic distractors.
_MAX_DIVISIONS = 12
_MAX_ALIASES = 3


class Passage(TypedDict):
  id: str
  title: str
  text: str


def passage_id(slug: str, aspect: str) -> str:
  """Stable id of the passage about ``aspect`` of the entity ``slug``."""
  if aspect not in ASPECTS:
    raise ValueError(f"Unknown passage aspect {aspect!r}; expected one of {ASPECTS}.")
  return f"{slug}--{aspect}"


def format_count(value: float) -> str:
  """Writes a quantity the way the passages do: "66,078,000", "0.49"."""
  if float(value).is_integer():
    return f"{int(value):,}"
  return f"{value:,.2f}".rstrip("0").rstrip(".")


def join_names(names: Sequence[str]) -> str:
  """English list: "A", "A and B", "A, B and C"."""
  names = list(names)
  if len(names) <= 1:
    return "".join(names)
  return ", ".join(names[:-1]) + " and " + names[-1]


def _sentence(text: str) -> str:
  """Ends ``text`` with one full stop ("Washington D.C." gets no second one)."""
  return text if text.endswith(".") else text + "."


def _latlng_phrase(lat: float, lng: float) -> str:
  ns = "N" if lat >= 0 else "S"
  ew = "E" if lng >= 0 else "W"
  return f"{abs(lat):.2f}°{ns} {abs(lng):.2f}°{ew}"


def entity_passages(f: CountryFacts) -> list[Passage]:
  """All passages written for one entity, in ``ASPECTS`` order."""
  out: list[Passage] = []

  def add(aspect: str, title: str, text: str) -> None:
    out.append({"id": passage_id(f.slug, aspect), "title": title, "text": text})

  if f.subregion or f.region or f.capital:
    parts = []
    # Other names, as an encyclopedia lead gives them, let a search for
    # "UAE" or "Republic of Korea" find the entity. Inverted forms
    # ("Korea, Republic of") and non-Latin scripts read badly in English.
    other = [a for a in f.aliases if a.isascii() and "," not in a][:_MAX_ALIASES]
    subject = f"{f.name} (also known as {join_names(other)})" if other else f.name
    if f.subregion and f.region and f.subregion != f.region:
      parts.append(_sentence(f"{subject} is a country or territory in {f.subregion}, part of {f.region}"))
    elif f.region or f.subregion:
      parts.append(_sentence(f"{subject} is a country or territory in {f.region or f.subregion}"))
    else:
      parts.append(_sentence(f"{subject} is a country or territory"))
    if f.capital:
      parts.append(_sentence(f"Its capital is {f.capital}"))
    add("overview", f.name, " ".join(parts))

  if f.capital:
    text = _sentence(f"{f.capital} is the capital city of {f.name}")
    if f.capital_latlng:
      text += f" The city lies at {_latlng_phrase(*f.capital_latlng)}."
    add("capital", f.capital, text)

  if f.population:
    text = f"{f.name} has a population of {format_count(f.population)} people."
    if f.demonym:
      text += " " + _sentence(f"Its people are called {f.demonym}")
    add("population", f"Demographics of {f.name}", text)

  if f.area_km2:
    add(
      "area",
      f"Geography of {f.name}",
      f"{f.name} covers a total area of {format_count(f.area_km2)} square kilometres.",
    )

  # An empty border list in the source often means "not recorded", so no
  # passage claims that an entity has no land borders.
  if f.borders:
    n = len(f.borders)
    what = "one neighbouring country or territory"
    if n > 1:
      what = f"{n} neighbouring countries or territories"
    add(
      "borders",
      f"Geography of {f.name}",
      _sentence(f"{f.name} shares land borders with {what}: {join_names(f.borders)}"),
    )

  if f.currencies:
    named = [f"the {cname} ({code})" for code, cname in f.currencies]
    if len(named) == 1:
      text = _sentence(f"The currency of {f.name} is {named[0]}")
    else:
      text = _sentence(f"The currencies used in {f.name} are {join_names(named)}")
    add("currency", f"Economy of {f.name}", text)

  if f.languages:
    if len(f.languages) == 1:
      text = _sentence(f"The official language of {f.name} is {f.languages[0]}")
    else:
      text = _sentence(f"The official languages of {f.name} are {join_names(f.languages)}")
    add("languages", f"Languages of {f.name}", text)

  if f.calling_codes:
    codes = join_names([f"+{c}" for c in f.calling_codes])
    noun = "code" if len(f.calling_codes) == 1 else "codes"
    verb = "is" if noun == "code" else "are"
    text = _sentence(f"The international calling {noun} of {f.name} {verb} {codes}")
    if f.tlds:
      text += " " + _sentence(f"Its internet country code top-level domain is {join_names(list(f.tlds))}")
    add("calling_code", f"Telephone numbers in {f.name}", text)

  if f.divisions:
    shown = list(f.divisions[:_MAX_DIVISIONS])
    text = f"{f.name} is divided into {len(f.divisions)} first-level administrative divisions"
    text += ", including " if len(f.divisions) > len(shown) else ": "
    text = _sentence(text + join_names(shown))
    add("divisions", f"Administrative divisions of {f.name}", text)

  if f.timezones:
    zones = join_names(list(f.timezones))
    noun = "time zone" if len(f.timezones) == 1 else "time zones"
    add("timezones", f"Time in {f.name}", _sentence(f"{f.name} observes the {noun} {zones}"))

  return out


def build_corpus(facts: Iterable[CountryFacts] | None = None) -> list[Passage]:
  """The full corpus, deterministic: entities sorted by slug, aspects in order."""
  if facts is None:
    facts = load_country_facts()
  passages: list[Passage] = []
  for f in facts:
    passages.extend(entity_passages(f))
  ids = [p["id"] for p in passages]
  if len(set(ids)) != len(ids):
    raise ValueError("Duplicate passage ids in the corpus; entity slugs must be unique.")
  return passages


def save_corpus(path: str, passages: Iterable[Passage]) -> None:
  """Saves passages as ``{"id","title","text"}`` JSON lines (atomic)."""
  write_jsonl(path, ({"id": p["id"], "title": p["title"], "text": p["text"]} for p in passages))


def load_corpus(path: str) -> list[Passage]:
  """Loads a passage corpus from JSONL.

  Accepts our ``{"id","title","text"}`` records and also the wiki-18 style
  ``{"id","contents"}`` records used by the paper's retrieval setup, where
  ``contents`` is ``'"Title"\\ntext'``.
  """
  passages: list[Passage] = []
  for n, rec in enumerate(read_jsonl(path)):
    pid = str(rec.get("id", n))
    if "text" in rec:
      passages.append({"id": pid, "title": str(rec.get("title", "")), "text": str(rec["text"])})
    elif "contents" in rec:
      title, _, text = str(rec["contents"]).partition("\n")
      passages.append({"id": pid, "title": title.strip().strip('"'), "text": text.strip()})
    else:
      raise ValueError(
        f"{path}: record {n} has neither 'text' nor 'contents'; "
        "corpus lines must be {'id','title','text'} or {'id','contents'}."
      )
  if not passages:
    raise ValueError(f"{path}: the corpus is empty.")
  return passages
