"""Country facts read from installed packages, cleaned into one record per entity.

The Search-QA corpus and its questions are both derived from these records, so
every gold answer is, by construction, stated somewhere in the corpus.

Sources (no network needed):
  * ``countryinfo`` -- capitals, populations, areas, borders, calling codes,
    regions, demonyms, currencies and languages (as ISO codes);
  * ``pycountry``   -- English names for the ISO 4217 currency and ISO 639
    language codes that ``countryinfo`` stores.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

# Dissolved states still listed by countryinfo (Serbia and Montenegro, the
# Netherlands Antilles); kept, they would make "the country whose capital is
# Belgrade" ambiguous and repeat Curacao's facts under an old name.
_DISSOLVED_ALPHA3 = frozenset({"SCG", "ANT"})

# ISO 4217 codes that were retired (redenominations, euro adoption) and are
# therefore missing from pycountry's current list, but still used in the
# countryinfo snapshot.
_RETIRED_CURRENCY_NAMES = {
  "BGN": "Bulgarian Lev",
  "BYR": "Belarusian Ruble",
  "CSD": "Serbian Dinar",
  "CUC": "Cuban Convertible Peso",
  "HRK": "Croatian Kuna",
  "MRO": "Mauritanian Ouguiya",
  "SLL": "Sierra Leonean Leone",
  "STD": "Sao Tome and Principe Dobra",
  "USS": "US Dollar (Same day)",
  "VEF": "Venezuelan Bolivar Fuerte",
  "ZMK": "Zambian Kwacha",
}

# Language codes whose ISO 639 reference name is not what an English text
# would call the language, or that countryinfo stores wrongly ("rs" is
# Serbia's country code, used there in place of the language code "sr").
_LANGUAGE_NAME_FIXES = {
  "el": "Greek",
  "rs": "Serbian",
}


@dataclasses.dataclass(frozen=True)
class CountryFacts:
  """Everything the corpus says about one country or territory.

  Missing facts are ``None`` or empty tuples: the corpus then simply has no
  passage for them and no question asks about them.
  """

  name: str
  slug: str
  aliases: tuple[str, ...]
  capital: str | None
  capital_latlng: tuple[float, float] | None
  region: str | None
  subregion: str | None
  population: int | None
  area_km2: float | None
  demonym: str | None
  currencies: tuple[tuple[str, str], ...]  # (ISO code, English name)
  languages: tuple[str, ...]  # English names
  calling_codes: tuple[str, ...]  # digits only, e.g. "33" or "1809"
  tlds: tuple[str, ...]
  borders: tuple[str, ...]  # names of neighbouring entities in this corpus
  divisions: tuple[str, ...]
  timezones: tuple[str, ...]


def slugify(text: str) -> str:
  """ASCII, lower-case, dash-separated form of a name, used in passage ids."""
  folded = fold_accents(text).lower()
  return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def fold_accents(text: str) -> str:
  """Drops diacritics ("Brasília" -> "Brasilia") so both spellings can match."""
  decomposed = unicodedata.normalize("NFKD", text)
  return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _nonempty(value) -> bool:
  return value not in (None, "", [], {})


def _completeness(raw: dict) -> tuple[int, int]:
  """Ranks duplicate records: full ISO triple first, then most filled fields."""
  iso = raw.get("ISO") or {}
  full_iso = int(all(iso.get(k) for k in ("alpha2", "alpha3", "numeric")))
  return full_iso, sum(_nonempty(v) for v in raw.values())


_INSTALL_HINT = (
  "Search-QA facts need the 'countryinfo' and 'pycountry' packages; "
  "install them with: pip install countryinfo==1.0.1 pycountry==26.2.16"
)


def _pycountry():
  try:
    import pycountry  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(_INSTALL_HINT) from err
  return pycountry


def _currency_name(code: str) -> str | None:
  record = _pycountry().currencies.get(alpha_3=code)
  if record is not None:
    return record.name
  return _RETIRED_CURRENCY_NAMES.get(code)


def _language_name(code: str) -> str | None:
  if code in _LANGUAGE_NAME_FIXES:
    return _LANGUAGE_NAME_FIXES[code]
  languages = _pycountry().languages
  record = languages.get(alpha_2=code) if len(code) == 2 else languages.get(alpha_3=code)
  if record is None:
    return None
  # ISO reference names carry qualifiers ("Malay (macrolanguage)") that
  # no encyclopedia sentence would contain.
  return re.sub(r"\s*\(.*?\)", "", record.name).strip()


def _aliases(name: str, alt_spellings, iso: dict) -> tuple[str, ...]:
  """Other names of an entity usable as gold answers (its ISO codes excluded).

  Abbreviations that are not its ISO codes ("UAE" for ARE) are kept.
  """
  codes = {str(v).upper() for v in (iso or {}).values() if v}
  out = []
  for alt in alt_spellings or []:
    alt = str(alt).strip()
    if not alt or alt.upper() in codes or alt == name or alt.isdigit():
      continue
    if alt not in out:
      out.append(alt)
  folded = fold_accents(name)
  if folded != name and folded not in out:
    out.append(folded)
  return tuple(out)


def _positive_number(value):
  if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
    return value
  return None


def _load_raw_records() -> list[dict]:
  try:
    from countryinfo import CountryInfo  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(_INSTALL_HINT) from err
  return list(CountryInfo.all().values())


def load_country_facts() -> list[CountryFacts]:
  """Reads, de-duplicates and cleans the installed country facts.

  Returns the records sorted by slug, so that everything built from them is
  deterministic. One record per ISO alpha-3 code: countryinfo lists some
  entities twice (e.g. "Burma"/"Myanmar"), and the more complete record wins.
  """
  by_code: dict[str, dict] = {}
  for raw in _load_raw_records():
    code = ((raw.get("ISO") or {}).get("alpha3") or "").upper()
    # Records without an ISO code are sub-national (Wales, Scotland).
    if not code or code in _DISSOLVED_ALPHA3 or not raw.get("name"):
      continue
    best = by_code.get(code)
    if best is None or _completeness(raw) > _completeness(best):
      by_code[code] = raw

  names_by_code = {code: raw["name"] for code, raw in by_code.items()}
  facts = [_clean(raw, names_by_code) for raw in by_code.values()]
  facts.sort(key=lambda f: f.slug)
  slugs = [f.slug for f in facts]
  if len(set(slugs)) != len(slugs):
    raise ValueError("Two country records map to the same slug; passage ids would clash.")
  return facts


def _clean(raw: dict, names_by_code: dict[str, str]) -> CountryFacts:
  name = str(raw["name"]).strip()
  capital = raw.get("capital")
  if isinstance(capital, list):  # one record stores ["Vatican City"]
    capital = capital[0] if capital else None
  capital = str(capital).strip() if capital else None

  latlng = raw.get("capital_latlng")
  capital_latlng = None
  if capital and isinstance(latlng, list) and len(latlng) == 2:
    capital_latlng = (float(latlng[0]), float(latlng[1]))

  currencies = []
  for code in raw.get("currencies") or []:
    cname = _currency_name(str(code).upper())
    if cname:
      currencies.append((str(code).upper(), cname))

  languages = []
  for code in raw.get("languages") or []:
    lname = _language_name(str(code))
    if lname and lname not in languages:
      languages.append(lname)

  calling = []
  for code in raw.get("callingCodes") or []:
    digits = re.sub(r"\D", "", str(code))
    if digits and digits not in calling:
      calling.append(digits)

  # Border codes without a record here (e.g. Kosovo's "XKX") cannot be
  # named, so they are left out rather than printed as codes.
  borders = tuple(
    names_by_code[b] for b in (raw.get("borders") or []) if b in names_by_code and names_by_code[b] != name
  )

  return CountryFacts(
    name=name,
    slug=slugify(name),
    aliases=_aliases(name, raw.get("altSpellings"), raw.get("ISO")),
    capital=capital,
    capital_latlng=capital_latlng,
    region=(raw.get("region") or None),
    subregion=(raw.get("subregion") or None),
    population=_positive_number(raw.get("population")),
    area_km2=_positive_number(raw.get("area")),
    demonym=(raw.get("demonym") or None),
    currencies=tuple(currencies),
    languages=tuple(languages),
    calling_codes=tuple(calling),
    # Internationalised (non-Latin) domains are dropped: the passages are English.
    tlds=tuple(t for t in (raw.get("tld") or []) if t and t.startswith(".") and t.isascii()),
    borders=borders,
    divisions=tuple(str(p) for p in (raw.get("provinces") or []) if p),
    timezones=tuple(str(t) for t in (raw.get("timezones") or []) if t),
  )
