"""Result tables in the layout of the paper: Table 1 (ALFWorld) and Table 2 (Search-QA).

`build` turns episode records into rows (one per mode) with success per type, the average
over all episodes, steps per episode and tokens per step; `write` saves `results.json` and
`results.md` atomically.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from lskill_jax.agents.accounting import totals
from lskill_jax.io import atomic_write_text, write_json

ALFWORLD_COLUMNS = (  # (task type, column name), in the paper's order
    ("pick_and_place_simple", "Pick"), ("look_at_obj_in_light", "Look"),
    ("pick_clean_then_place_in_recep", "Clean"), ("pick_heat_then_place_in_recep", "Heat"),
    ("pick_cool_then_place_in_recep", "Cool"), ("pick_two_obj_and_place", "Pick2"))
SEARCHQA_COLUMNS = (("direct_retrieval", "Direct"), ("multi_hop", "Multi-hop"),
                    ("comparison", "Comparison"))
SPLIT_TITLES = {"valid_seen": "seen (valid_seen)", "valid_unseen": "unseen (valid_unseen)"}


def _rate(records: Sequence[dict]) -> dict:
  n = len(records)
  hits = sum(float(r["success"]) for r in records)
  return {"n": n, "success": hits, "rate": 100.0 * hits / n if n else None}


def mode_row(records: Sequence[dict], type_key: str, columns) -> dict:
  """One table row: per-type and average success (%), steps and tokens per step, fallbacks."""
  by_type = {t: _rate([r for r in records if r.get(type_key) == t]) for t, _ in columns}
  tok = totals(records)
  steps = tok["steps"]
  context = tok.get("skill_tokens", 0) + tok.get("demo_tokens", 0)
  fallbacks = sum(r.get("fallbacks", 0) for r in records)
  return {
      "by_type": by_type,
      "average": _rate(records),
      "episodes": len(records),
      "steps_per_episode": steps / len(records) if records else None,
      "prefill_per_step": tok.get("prefill_per_step"),
      "decode_per_step": tok.get("decode_per_step"),
      "skill_per_step": tok.get("skill_per_step", 0.0),
      "demo_per_step": tok.get("demo_per_step", 0.0),
      "context_per_step": context / steps if steps else None,
      "fallbacks_per_step": fallbacks / steps if steps else None,
      "errors": sum(1 for r in records if r.get("error")),
      "tokens": tok,
  }


def build(env: str, results: Mapping[str, Mapping[str, Sequence[dict]]],
          meta: Mapping | None = None) -> dict:
  """{split: {mode: rows}} for `env` ('alfworld' or 'searchqa') from records per split and mode."""
  type_key, columns = (("task_type", ALFWORLD_COLUMNS) if env == "alfworld"
                       else ("skill_type", SEARCHQA_COLUMNS))
  tables = {split: {mode: mode_row(recs, type_key, columns) for mode, recs in by_mode.items()}
            for split, by_mode in results.items()}
  return {"env": env, "columns": [name for _, name in columns],
          "types": [t for t, _ in columns], "tables": tables, "meta": dict(meta or {})}


def format_percent(x) -> str:
  """A percentage with one decimal, or a dash for a missing value."""
  return "—" if x is None else f"{x:.1f}"


def format_number(x, digits: int = 0) -> str:
  """A number with thousands separators and `digits` decimals, or a dash for a missing value."""
  return "—" if x is None else f"{x:,.{digits}f}"


def to_markdown(rep: Mapping) -> str:
  """The tables as Markdown, one per split, with the episode counts under each."""
  env = rep["env"]
  lines = []
  for split, rows in rep["tables"].items():
    title = (f"ALFWorld, {SPLIT_TITLES.get(split, split)}" if env == "alfworld"
             else f"Search-QA ({split})")
    lines.append(f"### {title}\n")
    metric = "success %" if env == "alfworld" else "EM %"
    if env == "alfworld":
      head = [*rep["columns"], "Avg", "Steps/ep", "Prefill tok/step", "Decode tok/step",
              "Skill/demo tok/step", "Fallbacks/step"]
    else:
      head = [*rep["columns"], "Avg", "Skill/demo tok/step", "Prefill tok/step",
              "Decode tok/step", "Steps/q", "Invalid/step"]
    lines.append("| Mode | " + " | ".join(head) + " |")
    lines.append("|---|" + "---:|" * len(head))
    for mode, row in rows.items():
      cells = [format_percent(row["by_type"][t]["rate"]) for t in rep["types"]]
      cells.append(format_percent(row["average"]["rate"]))
      if env == "alfworld":
        cells += [format_number(row["steps_per_episode"], 1),
                  format_number(row["prefill_per_step"]), format_number(row["decode_per_step"]),
                  format_number(row["context_per_step"]),
                  format_number(row["fallbacks_per_step"], 2)]
      else:
        cells += [format_number(row["context_per_step"]), format_number(row["prefill_per_step"]),
                  format_number(row["decode_per_step"]), format_number(row["steps_per_episode"], 2),
                  format_number(row["fallbacks_per_step"], 2)]
      lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    any_row = next(iter(rows.values()), None)
    if any_row is not None:
      counts = ", ".join(f"{name} {any_row['by_type'][t]['n']}"
                         for t, name in zip(rep["types"], rep["columns"]))
      errors = {m: r["errors"] for m, r in rows.items() if r["errors"]}
      lines.append(f"\nColumns are {metric}; episodes per type: {counts}."
                   + (f" Episodes ended by environment errors: {errors}." if errors else ""))
    lines.append("")
  lines.append("Prefill: prompt ids sent per step (chat template included); decode: ids "
               "generated per step (end-of-turn id excluded); skill/demo: prompt tokens of the "
               "in-context skill or the demonstration.\n")
  meta = rep.get("meta", {})
  lines.append(f"Model: `{meta.get('model')}`"
               + (f"; compiler: `{meta.get('compiler')}`, alpha {meta.get('alpha')}"
                  if meta.get("compiler") else "") + ".")
  return "\n".join(lines) + "\n"


def write(rep: Mapping, workdir: str) -> tuple[str, str]:
  """Writes results.json and results.md to `workdir`; returns their paths."""
  json_path = os.path.join(workdir, "results.json")
  md_path = os.path.join(workdir, "results.md")
  write_json(json_path, rep, indent=1, sort_keys=True, default=str)
  atomic_write_text(md_path, to_markdown(rep))
  return json_path, md_path
