"""Corpus sources (items, manual pages, info manuals, installed packages) and corpus writing."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from lskill_jax.data import corpus, roff, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _texts(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["text"] for line in f]


# --- random items ------------------------------------------------------------------------------

def test_items_corpus_counts_determinism_and_unseen_validation_sets():
  train, val = sources.items_corpus(500, 40, per_doc=6, seed=3)
  assert len(train) == 500 and len(val) == 40
  assert (train, val) == sources.items_corpus(500, 40, per_doc=6, seed=3)
  assert (train, val) != sources.items_corpus(500, 40, per_doc=6, seed=4)
  sets = lambda docs: [frozenset(d[len("Items: "):-1].split()) for d in docs]
  for items in sets(train + val):
    assert len(items) == 6 and items <= set(sources.ITEMS)
  assert len(set(sets(val))) == 40
  assert not set(sets(val)) & set(sets(train))
  assert not set(val) & set(train)
  assert train[0].startswith("Items: ") and train[0].endswith(".")


def test_items_vocabulary_is_the_one_the_training_test_uses():
  assert sources.ITEMS == tuple(("apple lamp towel knife bread kettle mirror pillow candle shelf "
                                 "drawer basket spoon plate window garden ladder bucket hammer rope "
                                 "blanket bottle camera wallet").split())


def test_items_corpus_refuses_impossible_requests():
  with pytest.raises(ValueError, match="per_doc"):
    sources.items_corpus(10, 2, per_doc=25)
  # One item per document: 24 possible sets; holding out all of them leaves training nothing.
  with pytest.raises(ValueError, match="unseen"):
    sources.items_corpus(10, 24, per_doc=1)
  train, val = sources.items_corpus(10, 23, per_doc=1)
  assert len(set(train)) == 1 and not set(train) & set(val)


def test_build_corpus_writes_items(tmp_path):
  out = tmp_path / "items"
  subprocess.run([sys.executable, "-m", "launch.build_corpus", f"--out={out}", "--items=30",
                  "--items_val=5", "--items_per_doc=4", "--seed=1"], cwd=ROOT, check=True,
                 capture_output=True)
  train, val = _texts(out / "train.jsonl"), _texts(out / "val.jsonl")
  assert (train, val) == sources.items_corpus(30, 5, per_doc=4, seed=1)


# --- manual pages --------------------------------------------------------------------------------

_PAGE = r""".\" A comment line that must not show.
.de XX
.B this macro body is skipped
..
.TH FROB 1 "2024" "frob 1.0"
.SH NAME
frob \- twiddle the widgets of a file
.SH SYNOPSIS
.B frob
[\fB\-v\fR] \fIfile\fR
.SH DESCRIPTION
.B frob
reads \fIfile\fR and twiddles every widget it finds, \(em quietly.
It keeps going
after errors.
.TP
.BR \-v ", " \-\-verbose
Say what is being twiddled.
.TP
.BI \-o\  file \fR,\ \fB\-\-output= file
Write to \fIfile\fP.
.IP \(bu 2
Widgets are counted.
.SS Example
.nf
frob \-v widgets.txt
frob \-\-help
.fi
.TS
tab(;);
l l.
Code;Meaning
0;success
.TE
.if n \{\
.ds hidden text in a conditional block
.\}
"""


def _man_tree(tmp_path):
  root = tmp_path / "man"
  (root / "man1").mkdir(parents=True)
  (root / "fr" / "man1").mkdir(parents=True)
  with gzip.open(root / "man1" / "frob.1.gz", "wt") as f:
    f.write(_PAGE)
  (root / "man1" / "twiddle.1").write_text(".so man1/frob.1\n")
  os.symlink("frob.1.gz", root / "man1" / "frobnicate.1.gz")
  with gzip.open(root / "fr" / "man1" / "frob.1.gz", "wt") as f:
    f.write(_PAGE)
  return root


def test_man_page_to_text():
  title, text = roff.man_to_text(_PAGE)
  assert title == "FROB"
  assert "## Name\n\nfrob - twiddle the widgets of a file" in text
  assert "frob reads file and twiddles every widget it finds, — quietly. It keeps going after errors." in text
  assert "-v, --verbose\n    Say what is being twiddled." in text
  assert "-o file, --output=file\n    Write to file." in text
  assert "- Widgets are counted." in text
  assert "### Example" in text
  assert "    frob -v widgets.txt\n    frob --help" in text
  assert "Code | Meaning" in text and "0 | success" in text
  for hidden in ("comment", "macro body", "hidden", "\\f", "\\-", ".TP"):
    assert hidden not in text


def test_mdoc_page_to_text():
  _, text = roff.man_to_text(".Dd May 1, 2024\n.Dt FROB 1\n.Sh NAME\n.Nm frob\n.Nd twiddle widgets\n"
                             ".Sh SYNOPSIS\n.Nm\n.Op Fl v\n.Ar file\n.Sh OPTIONS\n.Bl -tag\n"
                             ".It Fl v\nBe verbose.\n.El\n")
  assert "frob - twiddle widgets" in text
  assert "frob [-v] file" in text
  assert "-v\n    Be verbose." in text


def test_man_pages_source(tmp_path):
  root = _man_tree(tmp_path)
  found = list(sources.man_pages(str(root)))
  docs = [c for c in found if not c.problem]
  assert len(docs) == 1 and docs[0].text.startswith("# How to use frob\n\n## Name")
  assert sorted(c.problem for c in found if c.problem) == ["a link to another page"] * 2
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
    sources.man_pages(str(tmp_path / "empty"))


def test_man_pages_keep_about_max_per_family(tmp_path):
  root = tmp_path / "man"
  (root / "man1").mkdir(parents=True)
  page = ".TH X 1\n.SH NAME\n{0} \\- does {0}\n"
  for i in range(200):
    (root / "man1" / f"cloud_cmd{i}.1").write_text(page.format(f"cloud cmd{i}"))
  (root / "man1" / "ls.1").write_text(page.format("ls"))
  found = list(sources.man_pages(str(root), max_per_family=50))
  kept = [c.origin for c in found if not c.problem]
  assert 30 <= len(kept) <= 70 and str(root / "man1" / "ls.1") in kept
  assert kept == [c.origin for c in sources.man_pages(str(root), max_per_family=50) if not c.problem]
  assert {c.problem for c in found if c.problem} == {"beyond about 50 pages of one command family"}


def test_long_documents_are_cut_at_headings():
  body = "Intro words here.\n\n" + "\n\n".join(f"## Part {i}\n\n" + "word " * 40 for i in range(5))
  docs = sources.skill_document("tool", body, max_words=100)
  assert len(docs) == 3 and all(len(d.split()) <= 100 for d in docs)
  assert docs[0].startswith("# How to use tool (part 1 of 3)\n\nIntro words here.\n\n## Part 0")
  assert sources.skill_document("tool", "short body", 100) == ["# How to use tool\n\nshort body"]


# --- info manuals ------------------------------------------------------------------------------

def test_info_nodes(tmp_path):
  info = ("This is frob.info, produced by makeinfo.\n\n\x1f\n"
          "File: frob.info,  Node: Top,  Next: Invoking,  Up: (dir)\n\nFrob\n****\n\n"
          "Frob twiddles widgets.\n\n* Menu:\n\n* Invoking::  How to run it.\n\n\x1f\n"
          "File: frob.info,  Node: Invoking,  Prev: Top,  Up: Top\n\n1 Invoking frob\n"
          "===============\n\nRun 'frob -v FILE' to twiddle FILE.\n\n\x1f\nTag Table:\nNode: Top\x7f60\n"
          "\x1f\nEnd Tag Table\n")
  (tmp_path / "info").mkdir()
  with gzip.open(tmp_path / "info" / "frob.info.gz", "wt") as f:
    f.write(info)
  (tmp_path / "info" / "dir").write_text("not a manual")
  docs = list(sources.info_nodes(str(tmp_path / "info")))
  assert [d.text for d in docs] == [
      "# How to use frob\n\n## Frob\n\nFrob twiddles widgets.",
      "# How to use frob: Invoking\n\n## 1 Invoking frob\n\nRun 'frob -v FILE' to twiddle FILE."]
  with pytest.raises(FileNotFoundError, match="no info manuals"):
    sources.info_nodes(str(tmp_path))


# --- installed Python packages -----------------------------------------------------------------

_MODULE = '''"""Widget tools: count and twiddle widgets."""

import os


def twiddle(widget, *, times=1):
  """Twiddles a widget `times` times."""


def _helper():
  """Private: not documented for users."""


class Counter(Base):
  """Counts widgets."""

  def add(self, n):
    """Adds n widgets."""

  def _reset(self):
    """Private."""


class Undocumented:
  pass
'''


def _site_packages(tmp_path):
  site = tmp_path / "site-packages"
  (site / "widgets-1.0.dist-info").mkdir(parents=True)
  (site / "widgets-1.0.dist-info" / "METADATA").write_text(
      "Metadata-Version: 2.1\nName: widgets\nVersion: 1.0\nSummary: Widget tools.\n"
      "Description-Content-Type: text/markdown\n\n# widgets\n\nInstall and twiddle.\n")
  (site / "bare-2.0.dist-info").mkdir()
  (site / "bare-2.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bare\nVersion: 2.0\n\n")
  for sub in ("widgets/tests", "widgets/_impl", "widgets/extra"):
    (site / sub).mkdir(parents=True)
  (site / "widgets" / "__init__.py").write_text(_MODULE)
  (site / "widgets" / "broken.py").write_text('"""Python 2."""\nprint "hello"\n')
  (site / "widgets" / "plain.py").write_text("x = 1\n")
  (site / "widgets" / "_private.py").write_text('"""Private module."""\n')
  (site / "widgets" / "tests" / "test_w.py").write_text('"""Tests."""\n')
  (site / "widgets" / "_impl" / "core.py").write_text('"""Implementation."""\n')
  (site / "widgets" / "README.md").write_text("---\ntitle: x\n---\nRead me first.\n")
  (site / "widgets" / "extra" / "guide.rst").write_text("Guide\n=====\n\nSteps.\n")
  (site / "widgets" / "LICENSE.md").write_text("Permission is granted.\n")
  return str(site)


def test_package_metadata(tmp_path):
  site = _site_packages(tmp_path)
  found = {c.origin.rsplit(":", 1)[1]: c for c in sources.package_metadata([site])}
  assert found["widgets"].text == "# How to use widgets\n\nWidget tools.\n\n# widgets\n\nInstall and twiddle."
  assert found["bare"].problem == "no long description"
  with pytest.raises(FileNotFoundError, match="no installed distributions"):
    sources.package_metadata([str(tmp_path)])


def test_package_docs(tmp_path):
  site = _site_packages(tmp_path)
  (tmp_path / "site-packages" / "widgets" / "card.md").write_text("---\n{{ card }}\n---\nText.\n")
  found = list(sources.package_docs([site]))
  assert [c.problem for c in found if c.problem] == ["unreadable (malformed YAML front matter)"]
  docs = {os.path.basename(c.origin): c.text for c in found if not c.problem}
  assert docs == {"README.md": "# How to use widgets\n\nRead me first.",
                  "guide.rst": "# How to use widgets: extra/guide\n\nGuide\n=====\n\nSteps."}


def test_docstrings_read_public_api_without_importing(tmp_path):
  site = _site_packages(tmp_path)
  found = {os.path.relpath(c.origin, site): c for c in sources.docstrings([site])}
  assert sorted(found) == ["widgets/__init__.py", "widgets/broken.py", "widgets/plain.py"]
  assert found["widgets/broken.py"].problem == "not parseable as Python 3"
  assert found["widgets/plain.py"].problem == "no docstrings"
  assert found["widgets/__init__.py"].text == (
      "# How to use widgets\n\nWidget tools: count and twiddle widgets.\n\n"
      "## twiddle(widget, *, times=1)\n\nTwiddles a widget `times` times.\n\n"
      "## class Counter(Base)\n\nCounts widgets.\n\n### Counter.add(n)\n\nAdds n widgets.")


# --- selection and writing ---------------------------------------------------------------------

def _doc(i, words=40):
  return " ".join(f"w{i}x{j}" for j in range(words))


def test_selector_filters_dedups_and_splits_stably(tmp_path):
  near = _doc(1).replace("w1x39", "changed")
  first = [("a", [corpus.Candidate("a/1", _doc(1)), corpus.Candidate("a/2", _doc(1).upper()),
                  corpus.Candidate("a/3", near), corpus.Candidate("a/4", "too short"),
                  corpus.Candidate("a/5", _doc(5, 200)), corpus.Candidate("a/6", problem="unreadable")]
            + [corpus.Candidate(f"a/{i}", _doc(i)) for i in range(10, 60)])]
  report = corpus.write_corpus(first, str(tmp_path / "one"),
                               corpus.CorpusSelector(max_words=100, val_fraction=0.3, near_dup=0.8))
  a = report.sources["a"]
  assert a.found == 56 and a.train + a.val == 51 and a.val > 0
  assert a.rejected == {"duplicate": 1, "near-duplicate (>= 0.8 similar)": 1, "shorter than 30 words": 1,
                        "longer than 100 words": 1, "unreadable": 1}
  assert "a/3 (like a/1)" in report.summary()
  train, val = _texts(tmp_path / "one" / "train.jsonl"), _texts(tmp_path / "one" / "val.jsonl")
  # Another source added later leaves every earlier document on its side of the split.
  more = first + [("b", [corpus.Candidate(f"b/{i}", _doc(i)) for i in range(100, 150)])]
  corpus.write_corpus(more, str(tmp_path / "two"), corpus.CorpusSelector(val_fraction=0.3))
  train2, val2 = _texts(tmp_path / "two" / "train.jsonl"), _texts(tmp_path / "two" / "val.jsonl")
  assert set(train) <= set(train2) and set(val) <= set(val2)
  assert sorted(os.listdir(tmp_path / "one")) == ["train.jsonl", "val.jsonl"]


def test_write_corpus_leaves_nothing_when_a_source_fails(tmp_path):
  def failing():
    yield corpus.Candidate("x/1", _doc(1))
    raise OSError("disk gone")
  with pytest.raises(OSError, match="disk gone"):
    corpus.write_corpus([("x", failing())], str(tmp_path), corpus.CorpusSelector())
  assert os.listdir(tmp_path) == []


def test_build_corpus_from_all_sources(tmp_path):
  man = _man_tree(tmp_path)
  site = _site_packages(tmp_path)
  out = tmp_path / "out"
  res = subprocess.run(
      [sys.executable, "-m", "launch.build_corpus", f"--out={out}", "--sources=man,pymeta,pydoc",
       f"--man_dir={man}", f"--py_dir={site}", "--nopydoc_stdlib", "--min_words=3",
       "--val_fraction=0"], cwd=ROOT, check=True, capture_output=True, text=True)
  assert "man: 3 found" in res.stdout and "pymeta: 2 found" in res.stdout
  texts = _texts(out / "train.jsonl")
  assert len(texts) == 3 and _texts(out / "val.jsonl") == []
