"""A resumable sequence of named stages, each writing under OUT/<stage>/ and a marker when done.

    ran = run_stages(out, [("data", fn), ("stage2", fn2)], ctx)   # names of the stages run

A stage is `fn(ctx, stage_dir) -> dict` (a JSON summary). Its marker OUT/<stage>/DONE.json
(written atomically, after the stage's own files) holds that summary and the wall time; a
rerun skips every stage with a marker and reruns the first one without, which resumes from
whatever its functions left on disk (checkpoints, episodes.jsonl). `only` restricts a run to
some stages; stages before them must already be done.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

from absl import logging

from lskill_jax.io import write_json

MARKER = "DONE.json"
StageFn = Callable[[Any, str], dict]


def marker_path(out: str, stage: str) -> str:
  return os.path.join(out, stage, MARKER)


def read_marker(out: str, stage: str) -> dict | None:
  """The marker of a finished stage, or None."""
  path = marker_path(out, stage)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_stages(out: str, stages: Sequence[tuple[str, StageFn]], ctx,
               only: Sequence[str] | None = None) -> list[str]:
  """Runs each unfinished stage in order; returns the names of those that ran."""
  names = [n for n, _ in stages]
  unknown = sorted(set(only or ()) - set(names))
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; the stages are {names}.")
  ran = []
  for name, fn in stages:
    if only and name not in only:
      continue
    if read_marker(out, name) is not None:
      logging.info("stage %s: done before, skipped", name)
      continue
    missing = [n for n in names[:names.index(name)] if read_marker(out, n) is None]
    if missing:
      raise ValueError(f"stage {name} needs the earlier stage(s) {missing} finished first; "
                       "run without restricting the stages.")
    logging.info("stage %s: running", name)
    print(f"== stage {name}", flush=True)
    stage_dir = os.path.join(out, name)
    os.makedirs(stage_dir, exist_ok=True)
    start = time.time()
    summary = fn(ctx, stage_dir) or {}
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(marker_path(out, name), {"stage": name, "seconds": round(time.time() - start, 1),
                                        "finished": finished, "summary": summary},
               indent=1, default=str)
    ran.append(name)
  return ran
