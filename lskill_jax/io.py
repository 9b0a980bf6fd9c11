"""Atomic file and directory writes, and JSON Lines, for everything that writes results, data,
configs or weights.

    with atomic_file(path, "wb") as f:     # readers see the old file or the whole new one
      f.write(blob)
    write_json(path, obj, indent=1)        # the same, for one JSON document
    n = write_jsonl(path, records)         # one JSON object per line
    records = read_jsonl(path)             # JSONLError names path:line on a bad line
    with atomic_dir(out_dir) as tmp:       # fill tmp; it becomes out_dir only on success
      ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from typing import IO, Any, Iterable, Iterator


class JSONLError(ValueError):
  """A JSON Lines file has a line that is not JSON; the message names `path:line` and the fix."""


def _fsync_dir(folder: str) -> None:
  """Makes a rename in `folder` durable."""
  # os.replace is atomic but lives in the directory entry: until the directory itself is
  # synced, a power loss can bring back the old file (or none). Windows cannot open a
  # directory for fsync, and some network filesystems refuse it; the rename has still
  # happened there, so we only lose the durability guarantee, not the write.
  if os.name != "posix":
    return
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
  """Yields a file to write (mode "w": UTF-8 text, "wb": bytes) that replaces `path` whole on
  success; on an exception the temp file is removed and an existing `path` is left untouched.
  Creates the parent directory if needed."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}.")
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  # The temp file sits in the same folder because os.replace is only atomic within one
  # filesystem. It is opened with "x" under a unique name rather than made by mkstemp, whose
  # files are owner-only: the result gets the permissions of any other new file there. The
  # leading dot keeps it out of globs; pid and random part keep concurrent writers apart.
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  f = open(tmp, "xb") if mode == "wb" else open(tmp, "x", encoding="utf-8")
  try:
    with f:
      yield f
      f.flush()
      os.fsync(f.fileno())  # the data must be on disk before the rename makes it visible
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _fsync_dir(folder)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  with atomic_file(path, "w") as f:
    f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_file(path, "wb") as f:
    f.write(data)


def write_json(path: str | os.PathLike, obj: Any, **json_kwargs) -> None:
  """Writes one JSON document atomically, ending in a newline; `json_kwargs` go to json.dumps
  (indent, sort_keys, ensure_ascii, default, ...)."""
  atomic_write_text(path, json.dumps(obj, **json_kwargs) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
  """Writes one JSON object per line (UTF-8, not ASCII-escaped) atomically; returns how many.
  `records` may be a generator: lines stream to the temp file."""
  n = 0
  with atomic_file(path, "w") as f:
    for rec in records:
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
      n += 1
  return n


def read_jsonl(path: str | os.PathLike, fix: str = "fix or remove that line") -> list[Any]:
  """The records of a JSON Lines file, skipping blank lines. A line that is not UTF-8 JSON
  raises JSONLError naming `path:line`, what is wrong and `fix` (what the caller's user should
  do about it)."""
  path = os.fspath(path)
  records = []
  # Read bytes and decode line by line, so that a bad byte is reported on its line too.
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as err:
        raise JSONLError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[err.start]:02x} at column "
                         f"{err.start + 1}); {fix}.") from err
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as err:
        raise JSONLError(f"{path}:{lineno}: not valid JSON ({err.msg}); {fix}.") from err
  return records


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temp directory beside `path` to fill; on success it replaces `path` (an existing
  directory there is moved aside and deleted), on an exception it is deleted and `path` is
  left as it was."""
  final = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(final)) or "."
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  # A directory cannot be renamed over a non-empty one, so the old one is moved aside first;
  # between the two renames `path` is briefly absent, never half-written.
  old = None
  if os.path.exists(final):
    old = f"{final}.old-{os.getpid()}"
    os.replace(final, old)
  os.replace(tmp, final)
  if old:
    shutil.rmtree(old, ignore_errors=True)
  _fsync_dir(parent)
