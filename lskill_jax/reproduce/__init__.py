"""The LatentSkill reproduction as one resumable run: data, Stage 2, the plain-LoRA baseline,
the agents with their controls, the α sweep, composition, geometry, robustness and exposure,
and a report (OUT/report.md).

    from lskill_jax import reproduce
    ran = reproduce.run("workdir/reproduce", config)   # config: configs/reproduce_<scale>.py

A rerun with the same config skips finished stages and resumes the first unfinished one; a
rerun with another config is refused (the results would mix).
"""

from __future__ import annotations

import json
import os
import time
from typing import Sequence

from lskill_jax.io import write_json
from lskill_jax.reproduce import stages
from lskill_jax.reproduce.pipeline import STAGE_NAMES, STAGES, Context, ReproduceError, StageStopped
from lskill_jax.training import run_config


def config_differences(before: dict, now: dict) -> list[str]:
  """Dotted names of the fields in which `now` differs from the recorded config `before`.

  The Stage-2 training config is compared as a training resume compares it: a field added to
  the training configs since the run was recorded counts as unchanged at its default (what
  the run used before the field existed). Everything else must be equal.
  """
  differ = sorted(k for k in set(before) | set(now)
                  if k != "stage2" and before.get(k) != now.get(k))
  if "stage2" in before and "stage2" in now:
    stage2 = run_config.differences(before["stage2"], now["stage2"], run_config.field_defaults(2))
    differ += sorted(f"stage2.{k}" for k in stage2)
  elif before.get("stage2") != now.get("stage2"):
    differ.append("stage2")
  return differ


def _check_config(out: str, config) -> None:
  """Writes OUT/config.json on the first run; refuses a later run whose config differs."""
  path = os.path.join(out, "config.json")
  now = json.loads(config.to_json_best_effort())
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      before = json.load(f)
    differ = config_differences(before, now)
    if differ:
      raise ReproduceError(
          f"{out} holds a run of scale {before.get('scale')!r} with another config (differs in "
          f"{differ}); rerun with the same flags, or pass another --out.")
  else:
    write_json(path, now, indent=1, sort_keys=True)


def run(out: str, config, *, command: str = "", mesh=None, only: Sequence[str] | None = None,
        show_progress: bool = True) -> list[str]:
  """Runs (or resumes) the reproduction into `out`; returns the names of the stages run."""
  os.makedirs(out, exist_ok=True)
  _check_config(out, config)
  run_file = os.path.join(out, "run.json")
  info = {"invocations": []}
  if os.path.isfile(run_file):
    with open(run_file, encoding="utf-8") as f:
      info = json.load(f)
  info["invocations"].append({"command": command,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
  write_json(run_file, info, indent=1)
  ctx = Context(out, config, mesh=mesh, show_progress=show_progress)
  ran = stages.run_stages(out, STAGES, ctx, only=only)
  if ran and "report" not in ran and stages.read_marker(out, "report") is not None:
    # An earlier report missed what just ran: write it again.
    os.remove(stages.marker_path(out, "report"))
    ran += stages.run_stages(out, STAGES, ctx, only=["report"])
  return ran


__all__ = ["Context", "ReproduceError", "STAGE_NAMES", "StageStopped", "run"]
