"""Lazy, validated safetensors reading (memory-mapped) and atomic writing.

We parse the header ourselves so that bf16 tensors read as numpy (via ml_dtypes) and each
tensor is a zero-copy view: loaders then slice exactly the shard a device needs.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

from lskill_jax.io import atomic_file

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CorruptFileError(ValueError):
  """A weights file is truncated or malformed."""


class SafetensorsFile:
  """Read-only view of one .safetensors file: `keys()`, `shape(k)`, `read(k)`, `metadata`."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    size = os.path.getsize(self.path)
    with open(self.path, "rb") as f:
      head = f.read(8)
      if len(head) < 8:
        raise CorruptFileError(f"{self.path}: too short to be a safetensors file ({size} bytes).")
      (n,) = struct.unpack("<Q", head)
      if n > _MAX_HEADER or 8 + n > size:
        raise CorruptFileError(f"{self.path}: header length {n} exceeds the file ({size} bytes); "
                               "the file is truncated or not safetensors.")
      try:
        header = json.loads(f.read(n))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{self.path}: unreadable safetensors header ({e}).") from None
    self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
    self._entries = header
    self._base = 8 + n
    for key, e in header.items():
      try:
        dtype = _DTYPES[e["dtype"]]
        start, end = e["data_offsets"]
        expected = int(np.prod(e["shape"], dtype=np.int64)) * np.dtype(dtype).itemsize
      except (KeyError, TypeError, ValueError):
        raise CorruptFileError(f"{self.path}: tensor {key!r} has a malformed header entry {e}.") from None
      if type(start) is not int or type(end) is not int or not 0 <= start <= end:
        raise CorruptFileError(f"{self.path}: tensor {key!r} has data offsets {[start, end]}; "
                               "they must be integers with 0 <= begin <= end.")
      if end - start != expected or self._base + end > size:
        raise CorruptFileError(
            f"{self.path}: tensor {key!r} needs bytes [{start}, {end}) of the data section but "
            f"the file has {size - self._base}; the file is truncated or corrupt.")
    self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

  def keys(self) -> list[str]:
    return list(self._entries)

  def __contains__(self, key: str) -> bool:
    return key in self._entries

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._entries[key]["shape"])

  def dtype(self, key: str) -> np.dtype:
    return np.dtype(_DTYPES[self._entries[key]["dtype"]])

  def read(self, key: str) -> np.ndarray:
    """Zero-copy view of a tensor."""
    e = self._entries[key]
    start, end = e["data_offsets"]
    raw = self._mm[self._base + start:self._base + end]
    return raw.view(_DTYPES[e["dtype"]]).reshape(e["shape"])

  def items(self) -> Iterator[tuple[str, np.ndarray]]:
    for k in self._entries:
      yield k, self.read(k)


def save_file(tensors: Mapping[str, np.ndarray], path: str,
              metadata: Mapping[str, str] | None = None) -> None:
  """Writes tensors atomically (temp file + fsync + rename): a crash never leaves half a file."""
  header: dict = {}
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  arrays = []
  offset = 0
  for key in sorted(tensors):
    arr = np.ascontiguousarray(np.asarray(tensors[key]))
    if arr.dtype not in _NAMES:
      raise TypeError(f"tensor {key!r} has dtype {arr.dtype}, which safetensors cannot store.")
    header[key] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                   "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
    arrays.append(arr)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # data section 8-byte aligned
  with atomic_file(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for arr in arrays:
      f.write(arr.tobytes())
