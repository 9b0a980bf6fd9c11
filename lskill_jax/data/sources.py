"""Where skill-like documents come from besides hand-written skill files, all offline.

* man: manual pages (roff, plain or gzipped) under a man directory's man*/ sections;
* info: the nodes of GNU info manuals;
* pymeta: the long description in each installed Python distribution's METADATA;
* pyreadme: README / .md / .rst files shipped inside installed packages;
* pydoc: module, class and function docstrings of Python source files, read with `ast`
  (nothing is imported, so no package code runs).

Each becomes a document "# How to use NAME" followed by the text; one longer than max_words is
cut at its section headings into parts. Every source lists its files first and raises
FileNotFoundError naming the path when it finds none. Also here: the "random items" corpus,
documents whose content cannot be guessed, for checking that adapters carry their document.
"""

from __future__ import annotations

import ast
import collections
import gzip
import hashlib
import importlib.metadata
import math
import os
import re
import zlib
from typing import Iterator

import numpy as np

from lskill_jax.data.corpus import Candidate, unusable
from lskill_jax.data.documents import DocumentError, parse_skill
from lskill_jax.data.roff import ManLink, man_to_text

ITEMS = tuple("apple lamp towel knife bread kettle mirror pillow candle shelf drawer basket spoon "
              "plate window garden ladder bucket hammer rope blanket bottle camera wallet".split())


def items_document(items) -> str:
  return "Items: " + " ".join(items) + "."


def items_corpus(n_train: int, n_val: int, per_doc: int = 6, seed: int = 0,
                 vocab: tuple[str, ...] = ITEMS) -> tuple[list[str], list[str]]:
  """(train, validation) documents of `per_doc` distinct items drawn at random from `vocab`.

  Validation sets of items are all different, and no training document has the items of a
  validation document (in any order), so held-out documents are really unseen. Training
  documents are independent draws and may repeat. Deterministic given the seed.
  """
  if not 1 <= per_doc <= len(vocab):
    raise ValueError(f"per_doc must be in [1, {len(vocab)}] (the vocabulary size), got {per_doc}.")
  if n_train < 0 or n_val < 0:
    raise ValueError(f"document counts must not be negative (train {n_train}, val {n_val}).")
  sets = math.comb(len(vocab), per_doc)
  if n_val > sets or (n_train and n_val >= sets):
    raise ValueError(f"{n_val} validation documents leave no unseen sets of {per_doc} items: "
                     f"there are only {sets} sets in a vocabulary of {len(vocab)}.")
  rng = np.random.default_rng(seed)
  held: set[frozenset] = set()
  val, train = [], []
  while len(val) < n_val:
    items = [vocab[i] for i in rng.choice(len(vocab), per_doc, replace=False)]
    if frozenset(items) not in held:
      held.add(frozenset(items))
      val.append(items_document(items))
  while len(train) < n_train:
    items = [vocab[i] for i in rng.choice(len(vocab), per_doc, replace=False)]
    if frozenset(items) not in held:
      train.append(items_document(items))
  return train, val


def skill_document(name: str, body: str, max_words: int) -> list[str]:
  """"# How to use NAME" + body; a long body is cut at its ## / ### headings into parts."""
  title = f"# How to use {name}"
  body = body.strip()
  if len(body.split()) + len(title.split()) <= max_words:
    return [f"{title}\n\n{body}"]
  parts, current, count = [], [], 0
  for chunk in re.split(r"\n(?=#{2,3} )", body):
    n = len(chunk.split())
    if current and count + n > max_words - len(title.split()) - 2:
      parts.append(current)
      current, count = [], 0
    current.append(chunk.strip())
    count += n
  parts.append(current)
  return [f"{title} (part {k} of {len(parts)})\n\n" + "\n\n".join(p)
          for k, p in enumerate(parts, 1)]


def _read(path: str) -> str:
  """A text file's contents, gunzipped when it ends in .gz (undecodable bytes replaced)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    return f.read().decode("utf-8", errors="replace")


def _unreadable(path: str, e: Exception) -> Candidate:
  return Candidate(path, problem=f"unreadable ({type(e).__name__})")


# ---------------------------------------------------------------------------------------------
# Manual pages and info manuals.

_MAN_FILE = re.compile(r"^(?P<stem>.+)\.(?P<section>[0-9n][^./]*)(?:\.gz)?$")


def _fraction(name: str) -> float:
  """A stable, evenly spread number in [0, 1) for a name."""
  return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") / 2**64


def man_family(path: str) -> str:
  """The command family of a page: gcloud for gcloud_compute_ssh.1, git for git-commit.1."""
  return re.split(r"[_\-.:]", _MAN_FILE.match(os.path.basename(path)).group("stem"))[0].lower()


def man_pages(root: str, max_words: int = 3000, max_per_family: int = 0) -> Iterator[Candidate]:
  """Candidates from the pages in ROOT/man*/ (translations in ROOT/<language>/ are skipped).

  max_per_family > 0 keeps about that many pages of each command family (chosen by a hash of
  the file name, so the choice is stable), so that one huge family (a cloud CLI ships
  thousands of near-identical pages) does not make up most of the corpus.
  """
  files = []
  if os.path.isdir(root):
    for section in sorted(os.listdir(root)):
      folder = os.path.join(root, section)
      if section.startswith("man") and os.path.isdir(folder):
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if _MAN_FILE.match(f)]
  if not files:
    raise FileNotFoundError(f"{root}: no manual pages (man*/NAME.SECTION or NAME.SECTION.gz) found.")

  families = collections.Counter(man_family(f) for f in files)

  def candidates():
    for path in files:
      family = families[man_family(path)]
      if max_per_family and family > max_per_family and \
          _fraction(os.path.basename(path)) >= max_per_family / family:
        yield Candidate(path, problem=f"beyond about {max_per_family} pages of one command family")
        continue
      if os.path.islink(path):
        yield Candidate(path, problem="a link to another page")
        continue
      try:
        _, text = man_to_text(_read(path))
      except ManLink:
        yield Candidate(path, problem="a link to another page")
        continue
      except (OSError, EOFError, zlib.error) as e:
        yield _unreadable(path, e)
        continue
      for doc in skill_document(_man_name(text, path), text, max_words):
        yield Candidate(path, doc)
  return candidates()


def _man_name(text: str, path: str) -> str:
  """The command a page describes: from its NAME section, else from the file name."""
  m = re.search(r"^## Name\n\n(.+)", text, re.M)
  if m:
    name = re.split(r"\s+[-—–]\s+|\s+\\-\s+", m.group(1), maxsplit=1)[0].strip()
    if name and len(name.split()) <= 8:
      return name
  return _MAN_FILE.match(os.path.basename(path)).group("stem")


_INFO_FILE = re.compile(r"\.info(?:-\d+)?(?:\.gz)?$")
_UNDERLINED = re.compile(r"^(\S.*)\n([*=\-.])\2{2,}[ \t]*$", re.M)


def info_nodes(root: str) -> Iterator[Candidate]:
  """Candidates from the nodes of the info manuals in ROOT (one document per node)."""
  files = sorted(os.path.join(root, f) for f in os.listdir(root) if _INFO_FILE.search(f)) \
      if os.path.isdir(root) else []
  if not files:
    raise FileNotFoundError(f"{root}: no info manuals (*.info, *.info.gz, *.info-N.gz) found.")

  def candidates():
    for path in files:
      try:
        text = _read(path)
      except (OSError, EOFError, zlib.error) as e:
        yield _unreadable(path, e)
        continue
      manual = _INFO_FILE.sub("", os.path.basename(path))
      for chunk in text.split("\x1f")[1:]:
        header, _, body = chunk.lstrip("\n").partition("\n")
        node = re.search(r"Node:\s*([^,\t\n]+)", header)
        if not node:
          continue              # tag tables, indirect tables, local variables: not text
        node = node.group(1).strip()
        body = _UNDERLINED.sub(r"## \1", body.split("\n* Menu:", 1)[0]).strip()
        name = manual if node == "Top" else f"{manual}: {node}"
        yield Candidate(f"{path}#{node}", f"# How to use {name}\n\n{body}")
  return candidates()


# ---------------------------------------------------------------------------------------------
# Installed Python packages.

def package_metadata(dirs: list[str], max_words: int = 3000) -> Iterator[Candidate]:
  """Candidates from the long descriptions in the METADATA of distributions installed in DIRS."""
  dists = []
  for d in dirs:
    found = sorted(importlib.metadata.distributions(path=[d]),
                   key=lambda dist: str(dist.metadata["Name"] or "").lower())
    dists += [(d, dist) for dist in found]
  if not dists:
    raise FileNotFoundError(f"{', '.join(dirs)}: no installed distributions (*.dist-info/METADATA) found.")

  def candidates():
    for d, dist in dists:
      meta = dist.metadata
      name = meta["Name"] or "?"
      origin = f"{d}:{name}"
      body = meta.get_payload() or meta["Description"] or ""
      if not isinstance(body, str) or not body.strip():
        yield Candidate(origin, problem="no long description")
        continue
      summary = (meta["Summary"] or "").strip()
      for doc in skill_document(name, f"{summary}\n\n{body.strip()}", max_words):
        yield Candidate(origin, doc)
  return candidates()


_DOC_SUFFIXES = (".md", ".markdown", ".rst")
_NOT_DOCS = ("license", "licence", "copying", "notice", "authors", "contributors", "changelog",
             "changes", "history", "news", "code_of_conduct", "security", "third_party")
_SKIP_DIRS = {"__pycache__", "test", "tests", "idle_test", "site-packages", "dist-packages",
              "_vendor", "vendor", "vendored", "node_modules"}


def _walk(root: str, keep) -> list[str]:
  """Files under root for which keep(name) holds, sorted, skipping tests, vendored copies,
  metadata and private packages (whose documentation is not for users)."""
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "_"))
                     and not d.endswith((".dist-info", ".egg-info")))
    found += [os.path.join(folder, f) for f in sorted(files) if keep(f)]
  return found


def _files_in(dirs: list[str], keep, what: str) -> list[tuple[str, str]]:
  """(dir, file) for the files under DIRS that keep(name) accepts; an error names DIRS if none."""
  files = [(d, f) for d in dirs for f in _walk(d, keep)]
  if not files:
    raise FileNotFoundError(f"{', '.join(dirs)}: no {what} found.")
  return files


def package_docs(dirs: list[str], max_words: int = 3000) -> Iterator[Candidate]:
  """Candidates from README and other .md / .rst files inside the packages in DIRS."""
  is_doc = lambda f: f.lower().endswith(_DOC_SUFFIXES) and not f.lower().startswith(_NOT_DOCS)
  files = _files_in(dirs, is_doc, "package documentation (*.md, *.rst)")

  def candidates():
    for d, path in files:
      rel = os.path.splitext(os.path.relpath(path, d))[0].split(os.sep)
      name = rel[0] if len(rel) <= 2 and rel[-1].lower() == "readme" else \
          f"{rel[0]}: {'/'.join(rel[1:])}" if len(rel) > 1 else rel[0]
      try:
        with open(path, "rb") as f:
          text = parse_skill(f.read(), source=path).text
      except OSError as e:
        yield _unreadable(path, e)
        continue
      except DocumentError as e:
        yield Candidate(path, problem=unusable(e))
        continue
      for doc in skill_document(name, text, max_words):
        yield Candidate(path, doc)
  return candidates()


def docstrings(dirs: list[str], max_words: int = 3000,
               max_bytes: int = 1_000_000) -> Iterator[Candidate]:
  """Candidates from the public API docstrings of the Python modules under DIRS, one per module.

  Modules are parsed, never imported; private modules and packages, tests and vendored copies
  are skipped.
  """
  is_module = lambda f: f.endswith(".py") and (not f.startswith("_") or f == "__init__.py") \
      and f not in ("setup.py", "conftest.py")
  files = _files_in(dirs, is_module, "Python modules (*.py)")

  def candidates():
    for d, path in files:
      parts = os.path.splitext(os.path.relpath(path, d))[0].split(os.sep)
      module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      try:
        if os.path.getsize(path) > max_bytes:
          yield Candidate(path, problem=f"larger than {max_bytes} bytes")
          continue
        with open(path, "rb") as f:
          source = f.read()
        if b'"""' not in source and b"'''" not in source:
          yield Candidate(path, problem="no docstrings")   # parsing costs more than this look
          continue
        tree = ast.parse(source, filename=path)
      except OSError as e:
        yield _unreadable(path, e)
        continue
      except (SyntaxError, ValueError, RecursionError):
        yield Candidate(path, problem="not parseable as Python 3")
        continue
      body = api_text(tree)
      if not body:
        yield Candidate(path, problem="no docstrings")
        continue
      for doc in skill_document(module or parts[-1], body, max_words):
        yield Candidate(path, doc)
  return candidates()


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
  args = ast.unparse(node.args)
  return re.sub(r"^(self|cls)(, |$)", "", args)


def api_text(tree: ast.Module) -> str:
  """A module's docstring, then each public function, class and method with its docstring."""
  parts = [ast.get_docstring(tree) or ""]
  for node in tree.body:
    if getattr(node, "name", "_").startswith("_"):
      continue
    doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.ClassDef)) else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and doc:
      parts.append(f"## {node.name}({_signature(node)})\n\n{doc}")
    elif isinstance(node, ast.ClassDef):
      methods = [(m, ast.get_docstring(m)) for m in node.body
                 if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and (not m.name.startswith("_") or m.name == "__init__") and ast.get_docstring(m)]
      if not doc and not methods:
        continue
      bases = ", ".join(ast.unparse(b) for b in node.bases)
      parts.append(f"## class {node.name}" + (f"({bases})" if bases else "") + (f"\n\n{doc}" if doc else ""))
      parts += [f"### {node.name}.{m.name}({_signature(m)})\n\n{d}" for m, d in methods]
  return "\n\n".join(p for p in parts if p).strip()
