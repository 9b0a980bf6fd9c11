"""lskill_jax.io on real files: atomic writes, JSON Lines, atomic directories."""

from __future__ import annotations

import json
import os
import re

import pytest

from lskill_jax.io import (JSONLError, atomic_dir, atomic_file, atomic_write_bytes,
                           atomic_write_text, read_jsonl, write_json, write_jsonl)


class Boom(Exception):
  pass


def test_atomic_write_replaces_content_and_leaves_only_the_file(tmp_path):
  path = tmp_path / "out.txt"
  atomic_write_text(path, "old\n")
  atomic_write_text(path, "néw\n")
  assert path.read_text(encoding="utf-8") == "néw\n"
  atomic_write_bytes(path, b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_creates_the_parent_folder(tmp_path):
  path = tmp_path / "a" / "b" / "out.txt"
  atomic_write_text(path, "x")
  assert path.read_text() == "x"


@pytest.mark.parametrize("mode, old, partial", [("w", "old", "half of the n"),
                                                ("wb", b"old", b"half of the n")])
def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path, mode, old, partial):
  path = tmp_path / "out"
  with atomic_file(path, mode) as f:
    f.write(old)
  with pytest.raises(Boom):
    with atomic_file(path, mode) as f:
      f.write(partial)
      f.flush()
      raise Boom()
  assert (path.read_bytes() if mode == "wb" else path.read_text()) == old
  assert os.listdir(tmp_path) == ["out"]


def test_failure_on_a_new_path_leaves_nothing(tmp_path):
  with pytest.raises(Boom):
    with atomic_file(tmp_path / "new.txt") as f:
      f.write("x")
      raise Boom()
  assert os.listdir(tmp_path) == []


def test_atomic_file_refuses_other_modes(tmp_path):
  with pytest.raises(ValueError, match="mode"):
    with atomic_file(tmp_path / "x", "a"):
      pass


def test_jsonl_round_trip(tmp_path):
  path = tmp_path / "r.jsonl"
  recs = [{"text": "Straße", "n": 1}, {"nested": {"a": [1, 2.5, None]}}, [1, "two"], "x"]
  assert write_jsonl(path, iter(recs)) == len(recs)  # a generator streams in
  raw = path.read_text(encoding="utf-8")
  assert raw.count("\n") == len(recs) and "Straße" in raw  # one line each, not ASCII-escaped
  assert read_jsonl(path) == recs
  assert write_jsonl(path, []) == 0 and read_jsonl(path) == []


def test_read_jsonl_skips_blank_lines(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}\n\n   \n{"a": 2}\n')
  assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
  with pytest.raises(JSONLError, match=rf"{re.escape(str(path))}:3: not valid JSON .*; fix or remove that line"):
    read_jsonl(path)
  with pytest.raises(ValueError, match="remove it to rerun"):  # callers catch ValueError
    read_jsonl(path, fix="remove it to rerun")
  path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
  with pytest.raises(JSONLError, match=rf"{re.escape(str(path))}:2: not UTF-8 \(byte 0xff"):
    read_jsonl(path)


def test_write_json_content(tmp_path):
  path = tmp_path / "d" / "c.json"
  obj = {"b": 1, "a": ["é", 2]}
  write_json(path, obj, indent=1, sort_keys=True, ensure_ascii=False)
  text = path.read_text(encoding="utf-8")
  assert text == json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
  assert json.loads(text) == obj
  write_json(path, {"x": "é"})  # json.dumps defaults: ASCII-escaped, one line
  assert path.read_text() == '{"x": "\\u00e9"}\n'
  assert os.listdir(path.parent) == ["c.json"]


def test_atomic_dir_success_replaces_an_existing_directory(tmp_path):
  out = tmp_path / "out"
  with atomic_dir(out) as tmp:
    assert os.path.dirname(tmp) == str(tmp_path) and not out.exists()
    with open(os.path.join(tmp, "a.txt"), "w") as f:
      f.write("1")
  assert sorted(os.listdir(out)) == ["a.txt"]
  with atomic_dir(str(out)) as tmp:
    with open(os.path.join(tmp, "b.txt"), "w") as f:
      f.write("2")
  assert sorted(os.listdir(out)) == ["b.txt"]  # replaced whole, not merged
  assert os.listdir(tmp_path) == ["out"]  # neither the temp nor the old directory is left


def test_atomic_dir_failure_keeps_the_old_directory(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "a.txt").write_text("old")
  with pytest.raises(Boom):
    with atomic_dir(out) as tmp:
      with open(os.path.join(tmp, "a.txt"), "w") as f:
        f.write("new")
      raise Boom()
  assert (out / "a.txt").read_text() == "old"
  assert os.listdir(tmp_path) == ["out"]
  with pytest.raises(Boom):
    with atomic_dir(tmp_path / "never") as tmp:
      raise Boom()
  assert os.listdir(tmp_path) == ["out"]
