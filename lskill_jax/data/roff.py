"""Manual pages (roff with the man or mdoc macros) as plain Markdown-like text.

A small converter of our own rather than groff: it is a hundred times faster per page (a
corpus build reads tens of thousands of pages) and gives the same text on every machine.
It keeps what a reader needs (headings, paragraphs, option tags, examples, tables) and drops
layout (fonts, spacing, indentation, macro definitions, conditionals).
"""

from __future__ import annotations

import re

# Special characters: \(xx, \[xx] and \C'xx'.
_GLYPHS = {
    "em": "—", "en": "–", "hy": "-", "mi": "-", "pl": "+", "eq": "=", "bu": "•", "aq": "'",
    "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "ga": "`", "aa": "´", "ti": "~",
    "ha": "^", "rs": "\\", "sl": "/", "ba": "|", "br": "|", "ul": "_", "sh": "#", "Do": "$",
    "at": "@", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "⟨", "ra": "⟩", "co": "©",
    "rg": "®", "tm": "™", "de": "°", "sc": "§", "dg": "†", "mu": "×", "di": "÷", "+-": "±",
    "<=": "≤", ">=": "≥", "!=": "≠", "->": "→", "<-": "←", "Fo": "«", "Fc": "»", "ss": "ß",
    "fo": "‹", "fc": "›", "ua": "↑", "da": "↓", "**": "*", "pc": "·", "ct": "¢", "Po": "£",
    "Eu": "€", "Ye": "¥", "OK": "✓", "sq": "□", "ci": "○", "es": "∅", "if": "∞",
}
# Predefined strings, mostly from pod2man's and mdoc's preambles: \*(xx, \*[xx], \*x.
_STRINGS = {"Aq": "'", "L\"": "“", "R\"": "”", "C`": '"', "C'": '"', "lq": "“", "rq": "”",
            "R": "®", "Tm": "™", "Ba": "|", "Ge": "≥", "Le": "≤", "Lq": "“", "Rq": "”"}
# One-character escapes: \e, \-, \&, ... (those missing here print their character).
_SIMPLE = {"e": "\\", "E": "\\", "\\": "\\", "-": "-", " ": " ", "~": " ", "0": " ", "&": "",
           "|": "", "^": "", "%": "", ",": "", "/": "", ":": "", "c": "", "d": "", "u": "",
           "p": "", "r": "", "a": "", "t": " ", "'": "´", "`": "`", ")": "", "{": "", "}": ""}

_ESCAPE = re.compile(r"""\\(?:
    f(?:\[[^\]]*\]|\(..|.)                       # font change
  | (?:\((?P<g2>..)|\[(?P<gb>[^\]]*)\]|C'(?P<gc>[^']*)')   # special character
  | \*(?:\[(?P<sb>[^\]]*)\]|\((?P<s2>..)|(?P<s1>.))    # string
  | [nkgmFM](?:\[[^\]]*\]|\(..|[+-]?.)            # register, mark, colour, family
  | s(?:[+-]?\(\d\d|[+-]?\[[^\]]*\]|'[^']*'|[+-]?\d+)  # point size
  | [hvwoNDlLbxXZRASVYB]'[^']*'                   # motions, widths, drawing
  | (?P<one>.)
  )""", re.X | re.S)

_COMMENT = re.compile(r'(?<!\\)((?:\\\\)*)\\["#].*')
_ALTERNATING = {"BR", "BI", "IB", "IR", "RB", "RI"}
_FONT_MACROS = _ALTERNATING | {"B", "I", "SM", "SB"}
_BREAKS = {"PP", "LP", "P", "HP", "sp", "br", "Pp", "Lp", "SY", "YS", "bp", "Bl", "El", "Sp"}
_SILENT = {"RS", "RE", "PD", "UR", "UE", "MT", "ME", "Dd", "Os", "TQ", "DT", "AT", "UC", "Ns",
           "Pf", "IX", "Bk", "Ek", "Sm", "Rs", "Re"}
# mdoc macros may name further macros among their arguments (`.Op Fl o Ar file`).
_MDOC = set("""Ad An Ap Ar At Bc Bo Bq Brc Bro Brq Bsx Bx Cd Cm Dc Do Dq Dv Dx Ec Em En Eo Er Es
    Ev Fa Fc Fd Fl Fn Nd Fo Ft Fx Ic In Li Lk Ms Mt Nm No Ns Nx Oc Oo Op Ot Ox Pa Pc Pf Po Pq Qc Ql
    Qo Qq Sc So Sq St Sx Sy Ta Tn Ux Va Vt Xc Xo Xr""".split())
_ENCLOSE = {"Op": "[]", "Oo": "[", "Oc": "]", "Pq": "()", "Po": "(", "Pc": ")", "Dq": "“”",
            "Do": "“", "Dc": "”", "Qq": '""', "Qo": '"', "Qc": '"', "Sq": "‘’", "So": "‘",
            "Sc": "’", "Bq": "[]", "Bo": "[", "Bc": "]", "Brq": "{}", "Bro": "{", "Brc": "}"}
_BULLETS = {"•", "*", "-", "o", "+", "·", "—", "–"}


def _mdoc_words(name: str, args: list[str]) -> str:
  """The text of an mdoc line: nested macro names dropped, flags dashed, brackets placed."""
  out, dash = [], name == "Fl"
  for a in args:
    if a in _MDOC:
      if a in _ENCLOSE and len(_ENCLOSE[a]) == 1:
        out.append(_ENCLOSE[a])
      dash = a == "Fl"
      continue
    out.append("-" + a if dash else a)
  if name == "Fl" and not args:
    out.append("-")
  text = " ".join(out)
  if name == "Nd":
    return "- " + text
  pair = _ENCLOSE.get(name, "")
  return pair[0] + text + pair[1] if len(pair) == 2 else pair + text


class ManLink(ValueError):
  """The page only points at another page (`.so`), which is read on its own."""


def args_of(line: str) -> list[str]:
  """A macro's arguments: split at spaces, with roff's "double quotes" ("" is a quote)."""
  out, i, n = [], 0, len(line)
  while i < n:
    if line[i] in " \t":
      i += 1
      continue
    if line[i] == '"':
      i += 1
      arg = []
      while i < n:
        if line[i] == '"':
          if line[i + 1:i + 2] == '"':
            arg.append('"')
            i += 2
            continue
          i += 1
          break
        arg.append(line[i])
        i += 1
      out.append("".join(arg))
    else:
      j = i
      while j < n and line[j] not in " \t":
        j += 2 if line[j] == "\\" else 1     # an escaped space does not end the argument
      out.append(line[i:j])
      i = j
  return out


class _Page:
  """Collects blocks of output text while the page's lines are read."""

  def __init__(self):
    self.blocks: list[str] = []
    self.words: list[str] = []
    self.pre: list[str] = []
    self.tag = None                  # a .TP / .It tag waiting for its description
    self.want_tag = False            # the next text is a .TP tag
    self.want_heading = 0            # the next text is a heading of this level
    self.strings = dict(_STRINGS)
    self.title = ""
    self.section = ""

  def expand(self, s: str) -> str:
    def one(m: re.Match) -> str:
      glyph = m.group("g2") or m.group("gb") or m.group("gc")
      if glyph is not None:
        if glyph.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", glyph):
          return chr(int(glyph[1:], 16))
        return _GLYPHS.get(glyph, "")
      name = m.group("sb") or m.group("s2") or m.group("s1")
      if name is not None:
        return self.strings.get(name, "")
      ch = m.group("one")
      if ch is not None:
        return _SIMPLE.get(ch, ch)
      return ""
    return _ESCAPE.sub(one, s)

  def text(self, s: str) -> None:
    s = s.strip()
    if not s:
      return
    if self.want_heading:
      self.heading(s, self.want_heading)
    elif self.want_tag:
      self.want_tag = False
      self.tag = s
    else:
      self.words.append(s)

  def flush(self) -> None:
    if self.words or self.tag:
      body = " ".join(self.words)
      self.blocks.append(f"{self.tag}\n    {body}" if self.tag and body else self.tag or body)
    self.words, self.tag = [], None
    if self.pre:
      while self.pre and not self.pre[-1].strip():
        self.pre.pop()
      if self.pre:
        self.blocks.append("\n".join("    " + line if line.strip() else "" for line in self.pre))
      self.pre = []

  def heading(self, s: str, level: int) -> None:
    self.flush()
    self.want_heading = 0
    if s.isupper():
      s = s.capitalize()
    self.blocks.append("#" * level + " " + s)


def man_to_text(source: str) -> tuple[str, str]:
  """(page name, text) of a roff manual page; raises ManLink for a `.so` pointer page."""
  page = _Page()
  lines = source.replace("\r\n", "\n").split("\n")
  nofill, table, table_sep, skip_until, depth = False, "", "\t", "", 0
  i = 0
  while i < len(lines):
    line = lines[i]
    i += 1
    while line.endswith("\\") and not line.endswith("\\\\") and i < len(lines) \
        and not lines[i].startswith((".", "'")):
      line = line[:-1] + lines[i]           # an escaped newline continues the line
      i += 1
    if skip_until:                           # inside .de / .ig: until the closing ".."
      if line.strip() == skip_until:
        skip_until = ""
      continue
    if depth:                                # inside a conditional's \{ ... \} block
      depth += line.count("\\{") - line.count("\\}")
      continue
    line = _COMMENT.sub(r"\1", line)
    if table:
      stripped = line.strip()
      if stripped.startswith((".TE", "'TE")):
        table = ""
        page.flush()
      elif table == "format":
        sep = re.search(r"tab\s*\((.)\)", stripped)
        if sep:
          table_sep = sep.group(1)
        if stripped.endswith("."):
          table = "rows"
      elif stripped not in ("_", "=", "") and not stripped.startswith("."):
        cells = [page.expand(c).strip() for c in line.replace("T{", "").replace("T}", "").split(table_sep)]
        page.pre.append(" | ".join(c for c in cells if c))
      continue
    if line[:1] not in (".", "'"):
      text = page.expand(line)
      if nofill:
        page.pre.append(text.rstrip())
      elif not text.strip():
        page.flush()
      else:
        if line[:1] in " \t" and not page.want_heading and not page.want_tag:
          page.flush()                       # a leading space breaks the line in roff
        page.text(text)
      continue
    name, _, rest = line[1:].strip().partition(" ")
    if not name:
      continue
    if name in ("de", "de1", "am", "ig"):
      skip_until = ".."
      continue
    if name in ("if", "ie", "el", "while"):
      depth = max(0, line.count("\\{") - line.count("\\}"))
      continue
    if name == "so":
      if not any(b.strip() for b in page.blocks) and not page.words:
        raise ManLink(rest.strip())
      continue
    if name == "ds":
      key, _, value = rest.strip().partition(" ")
      page.strings[key] = page.expand(value.lstrip('"'))
      continue
    args = [page.expand(a) for a in args_of(rest)]
    if name in ("TH", "Dt"):
      page.title, page.section = (args + ["", ""])[:2]
    elif name in ("SH", "Sh", "SS", "Ss"):
      level = 2 if name in ("SH", "Sh") else 3
      if args:
        page.heading(" ".join(args), level)
      else:
        page.flush()
        page.want_heading = level
    elif name in ("nf", "EX", "Vb") or name == "Bd" and ("-literal" in args or "-unfilled" in args):
      page.flush()
      nofill = True
    elif name in ("fi", "EE", "Ve", "Ed"):
      page.flush()
      nofill = False
    elif name == "TS":
      page.flush()
      table, table_sep = "format", "\t"
    elif name == "TP":
      page.flush()
      page.want_tag = True
    elif name in ("IP", "Ip", "It"):
      page.flush()
      tag = _mdoc_words(name, args) if name == "It" else " ".join(args[:1])
      if tag in _BULLETS:
        page.words.append("-")
      elif tag:
        page.tag = tag
    elif name in _BREAKS:
      page.flush()
    elif name in _SILENT:
      continue
    elif name in _MDOC or name in _ENCLOSE:
      page.text(_mdoc_words(name, args) if name != "Nm" or args else page.title.lower())
    elif name in _FONT_MACROS:
      # Alternating-font macros (.BR, .IR, ...) join their arguments without spaces.
      page.text(("" if name in _ALTERNATING else " ").join(args))
    elif name[:1].isupper():
      page.text(" ".join(args))        # other text-carrying macros: keep their words
  page.flush()
  return page.title, "\n\n".join(page.blocks)
