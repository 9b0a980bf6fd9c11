"""The reproduction's report: every stage's numbers as Markdown tables, the plots, the run's
command, machine and wall times, and a reading computed from the numbers.

Rates carry 95% Wilson intervals; "clearly" in the reading means the two intervals do not
overlap (a conservative test: overlapping intervals can still differ).
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
from typing import Mapping, Sequence

import numpy as np

from lskill_jax.agents.report import (ALFWORLD_COLUMNS, SEARCHQA_COLUMNS, SPLIT_TITLES,
                                     format_number, format_percent)
from lskill_jax.io import atomic_write_bytes, atomic_write_text
from lskill_jax.reproduce import stages

# The paper's Qwen3-8B results (DESIGN §6), for orientation only: another model and data.
PAPER = {
    ("alfworld", "valid_seen"): {"vanilla": 43.6, "incontext": 52.9, "latent": 74.3},
    ("alfworld", "valid_unseen"): {"vanilla": 47.0, "incontext": 56.0, "latent": 69.4},
    ("searchqa", "test"): {"incontext": 32.6, "latent": 35.6},
}
PAPER_TOKENS = {"alfworld": "prefill per step: latent 0.44k, in-context 1.21k",
                "searchqa": "skill-token cost per step: latent 0.31k, in-context 1.10k"}
PAPER_COMPOSITION = "component merging of Look+Pick: 84.6% seen / 77.8% unseen"
ENV_TITLES = {"alfworld": "ALFWorld (success %)", "searchqa": "Search-QA (EM %)"}
STAGE_ORDER = ("data", "stage2", "plain_lora", "agents", "alpha", "composition", "geometry",
               "robustness", "report")


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
  """95% Wilson score interval of a proportion, in percent; None for n = 0."""
  if n <= 0:
    return None
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def compact(rep: Mapping) -> dict:
  """An evaluation report without its per-episode token lists and config (for results.json)."""
  tables = {split: {mode: {k: v for k, v in row.items() if k != "tokens"}
                    for mode, row in rows.items()} for split, rows in rep["tables"].items()}
  return {"env": rep["env"], "columns": rep["columns"], "types": rep["types"], "tables": tables}


# ----------------------------------------------------------------------------- cells


def _rate_cell(avg: Mapping) -> str:
  ci = wilson(avg["success"], avg["n"])
  if ci is None:
    return "—"
  return f"{avg['rate']:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _rows(results: Mapping[str, Mapping], split: str) -> dict[str, dict]:
  """condition -> row for one split, from {condition: compact report} (a report holding
  several modes gives one condition per mode)."""
  out = {}
  for cond, rep in results.items():
    for mode, row in rep["tables"].get(split, {}).items():
      out[mode if cond == "modes" else cond] = row
  return out


def _splits(results: Mapping[str, Mapping]) -> list[str]:
  return list(dict.fromkeys(s for rep in results.values() for s in rep["tables"]))


def comparison_table(env: str, rows: Mapping[str, dict], split: str,
                     paper: Mapping[str, float] | None = None) -> str:
  """The paper's table layout: per-type rates, average with its interval, tokens per step."""
  columns = ALFWORLD_COLUMNS if env == "alfworld" else SEARCHQA_COLUMNS
  head = [name for _, name in columns] + ["Avg [95% CI]", "n", "Prefill tok/step",
                                          "Decode tok/step", "Skill/demo tok/step",
                                          "Valid action %"]
  if paper is not None:
    head.append("Paper (Qwen3-8B)")
  lines = ["| Condition | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
  for cond, row in rows.items():
    cells = [format_percent(row["by_type"].get(t, {}).get("rate")) for t, _ in columns]
    cells += [_rate_cell(row["average"]), str(row["average"]["n"]),
              format_number(row["prefill_per_step"]), format_number(row["decode_per_step"]),
              format_number(row["context_per_step"]), format_percent(valid_action_rate(row))]
    if paper is not None:
      cells.append(format_percent(paper.get(cond)))
    lines.append(f"| {cond} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def valid_action_rate(row: Mapping) -> float | None:
  """Percent of steps whose output was a usable action (an admissible ALFWorld command, a
  well-formed Search-QA call): at a scale where few episodes succeed, this is where an
  adapter's effect on the agent shows first."""
  f = row.get("fallbacks_per_step")
  return None if f is None else 100.0 * (1.0 - f)


def _split_title(env: str, split: str) -> str:
  return (f"ALFWorld, {SPLIT_TITLES.get(split, split)}" if env == "alfworld"
          else f"Search-QA ({split})")


# ----------------------------------------------------------------------------- reading


def _clearly(a: Mapping, b: Mapping) -> bool:
  """a's interval lies wholly above b's."""
  ca, cb = wilson(a["success"], a["n"]), wilson(b["success"], b["n"])
  return bool(ca and cb and ca[0] > cb[1])


def _vs(name_a: str, a: Mapping, name_b: str, b: Mapping) -> tuple[str, bool]:
  ra, rb = a["average"], b["average"]
  if not ra["n"] or not rb["n"]:
    return f"{name_a} vs {name_b}: no episodes", False
  beats = ra["rate"] > rb["rate"]
  word = ("clearly beats" if _clearly(ra, rb) else "beats (intervals overlap)") if beats else \
      ("ties" if ra["rate"] == rb["rate"] else "does not beat")
  return (f"{name_a} {_rate_cell(ra)} {word} {name_b} {_rate_cell(rb)}", beats)


def reading(agents: Mapping[str, Mapping]) -> list[str]:
  """Plain statements from the agents stage's numbers: latent vs in-context (rate and prefill
  tokens per step) and latent vs each of its controls, per environment and split."""
  lines = []
  wins_incontext, wins_controls, cases = 0, 0, 0
  for env, results in agents.items():
    for split in _splits(results):
      rows = _rows(results, split)
      if "latent" not in rows or "incontext" not in rows:
        continue
      lat, inc = rows["latent"], rows["incontext"]
      text, beats = _vs("latent", lat, "in-context", inc)
      fewer = (lat["prefill_per_step"] or 0) < (inc["prefill_per_step"] or 0)
      verdict = "yes" if beats and fewer else "no"
      cases += 1
      wins_incontext += verdict == "yes"
      lines.append(f"* **{_split_title(env, split)}: does latent beat in-context with fewer "
                   f"prefill tokens? {verdict}.** {text}; prefill "
                   f"{format_number(lat['prefill_per_step'])} vs "
                   f"{format_number(inc['prefill_per_step'])} tokens per step "
                   f"({'fewer' if fewer else 'not fewer'}).")
      controls = [c for c in rows if c.startswith("latent_") or c == "plain_lora"]
      if controls:
        results_c = [_vs("latent", lat, c, rows[c]) for c in controls]
        beaten = [c for c, (_, b) in zip(controls, results_c) if b]
        verdict = ("yes, all of them" if len(beaten) == len(controls) else
                   f"no: beats {len(beaten)} of {len(controls)}")
        lines.append(f"  * Does latent beat its own controls? {verdict}. "
                     + "; ".join(t for t, _ in results_c) + ".")
        wins_controls += len(beaten) == len(controls)
      valid = {c: valid_action_rate(rows[c]) for c in ["latent", "incontext", *controls]}
      if any(v is not None for v in valid.values()):
        lines.append("  * Steps with a usable action: " + ", ".join(
            f"{c} {format_percent(v)}" for c, v in valid.items()) + ".")
  if not lines:
    return ["* No latent and in-context results to compare."]
  lines += ["", f"Closing note: {_closing(cases, wins_incontext, wins_controls)}"]
  return lines


def _closing(cases: int, wins_incontext: int, wins_controls: int) -> str:
  """What the comparisons suggest together (chosen from the counts, not written by hand)."""
  tally = (f"latent beat in-context with fewer prefill tokens in {wins_incontext} of {cases} "
           f"comparisons and all its controls in {wins_controls} of {cases}.")
  if wins_controls == 0:
    return (tally + " It does no better than adapters that carry another skill, no skill or "
            "nothing learnt from a skill: in these numbers the compiled adapter's effect, if "
            "any, does not come from the skill's content.")
  if wins_controls < cases:
    return tally + " The skill's content helps in some settings but not consistently."
  if wins_incontext < cases:
    return (tally + " The adapters carry some of the skill's content, but less than reading "
            "the skill in the prompt gives.")
  return tally + " This is the paper's claim holding at this scale."


# ----------------------------------------------------------------------------- other stages


def alpha_plot(path: str, results: Mapping[str, Mapping[str, Mapping]]) -> None:
  """Success/EM (%) against α, one line per environment and split."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for env, by_alpha in results.items():
    alphas = sorted(by_alpha, key=float)
    for split in _splits(by_alpha):
      rates = [by_alpha[a]["tables"].get(split, {}).get("latent", {}).get("average", {}).get("rate")
               for a in alphas]
      ax.plot([float(a) for a in alphas], [np.nan if r is None else r for r in rates], marker="o",
              label=_split_title(env, split))
  ax.set_xlabel("α (adapter coefficient)")
  ax.set_ylabel("success / EM (%)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  atomic_write_bytes(path, buf.getvalue())


def geometry_summary(labels: Sequence[str], groups: Sequence[str], dist: np.ndarray) -> dict:
  """Mean ΔW distance of each skill to its own variants, to the other skills of its
  environment, and to the other environment's skills."""
  skills = [i for i, g in enumerate(groups) if g.endswith(" skill")]
  own, same_env, other_env = [], [], []
  for i in skills:
    env = groups[i].split()[0]
    own += [dist[i, j] for j, l in enumerate(labels) if l.startswith(labels[i] + "~")]
    for j in skills:
      if j != i:
        (same_env if groups[j].split()[0] == env else other_env).append(dist[i, j])
  mean = lambda xs: float(np.mean(xs)) if xs else None
  return {"to_own_variants": mean(own), "to_same_env_skills": mean(same_env),
          "to_other_env_skills": mean(other_env)}


def _load(out: str, stage: str, name: str = "results.json"):
  path = os.path.join(out, stage, name)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  import jax
  dev = jax.devices()[0]
  return (f"{platform.platform()}; CPU {cpu}, {os.cpu_count()} logical cores visible; "
          f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind})")


# ----------------------------------------------------------------------------- sections


def _agents_section(agents: Mapping) -> list[str]:
  lines = ["## Agents and controls", "",
           "Conditions: `vanilla`, `fewshot` (one expert demonstration), `incontext` (the skill "
           "in the prompt), `latent` (the Stage-2 compiler's adapter of the skill mounted, no "
           "skill text); controls, each the latent agent with another adapter: "
           "`latent_other_skill` (another task type's skill), `latent_nonsense` (random tokens "
           "as many as the skill's), `latent_empty` (an empty document), `plain_lora` (one LoRA "
           "trained on the same trajectories without the compiler).", ""]
  for env, results in agents.items():
    for split in _splits(results):
      key = (env, split)
      lines += [f"### {_split_title(env, split)}", "",
                comparison_table(env, _rows(results, split), split, PAPER.get(key, {})), ""]
    lines += [f"Paper, for orientation: {PAPER_TOKENS[env]}.", ""]
  return lines


def _alpha_section(alpha: Mapping) -> list[str]:
  alphas = sorted({a for by in alpha.values() for a in by}, key=float)
  head = "| Env / split | " + " | ".join(f"α={a}" for a in alphas) + " |"
  lines = ["## α sweep (latent agent)", "", head, "|---|" + "---:|" * len(alphas)]
  for env, by_alpha in alpha.items():
    for split in _splits(by_alpha):
      cells = []
      for a in alphas:
        row = by_alpha.get(a, {}).get("tables", {}).get(split, {}).get("latent")
        cells.append(_rate_cell(row["average"]) if row else "—")
      lines.append(f"| {_split_title(env, split)} | " + " | ".join(cells) + " |")
  return lines + ["", "![α sweep](alpha/alpha.png)", ""]


def _composition_section(comp: Mapping) -> list[str]:
  lines = ["## Composition", "",
           "`own_skill`: each episode's own skill alone; `sum_full`: the two full adapters "
           "added; `concatenated`: the two texts compiled as one; `component_merge`: every "
           "distinct component compiled once, shared ones added once. Each composed adapter "
           "serves every episode of both skills' types.", ""]
  for env, c in comp.items():
    rows = c["rows"]
    for split in _splits(rows):
      lines += [f"### {_split_title(env, split)}: {' + '.join(c['skills'])}", "",
                comparison_table(env, {k: r["tables"][split]["latent"] for k, r in rows.items()
                                       if split in r["tables"]}, split), ""]
  return lines + [f"Paper, for orientation: {PAPER_COMPOSITION}.", ""]


def _geometry_section(geo: Mapping) -> list[str]:
  n = len(geo["labels"])
  f = lambda x: "—" if x is None else f"{x:.4g}"
  return ["## Geometry of compiled adapters", "",
          f"{n} adapters (every shipped skill, each distinct component, every variant); "
          "Frobenius distances between their updates ΔW through the LoRA factors, classical MDS.",
          "", "| Mean ΔW distance of a skill to | value |", "|---|---:|",
          f"| its own variants | {f(geo['to_own_variants'])} |",
          f"| the other skills of its environment | {f(geo['to_same_env_skills'])} |",
          f"| the other environment's skills | {f(geo['to_other_env_skills'])} |", "",
          "![MDS of compiled adapters](geometry/geometry.png)", ""]


def _robustness_section(rob: Mapping, leaks: Sequence[Mapping] | None) -> list[str]:
  lines = ["## Robustness to the skill's wording", ""]
  for env, by_variant in rob.items():
    for split in _splits(by_variant):
      lines += [f"### {_split_title(env, split)}", "",
                "| Variant | in-context [95% CI] | latent [95% CI] | in-context prefill/step |"
                " latent prefill/step |", "|---|---:|---:|---:|---:|"]
      for v, rep in by_variant.items():
        rows = rep["tables"].get(split, {})
        cell = lambda m: _rate_cell(rows[m]["average"]) if m in rows else "—"
        tok = lambda m: format_number(rows[m]["prefill_per_step"]) if m in rows else "—"
        lines.append(f"| {v} | {cell('incontext')} | {cell('latent')} | {tok('incontext')} | "
                     f"{tok('latent')} |")
      lines.append("")
  if leaks:
    lines += ["## Exposure (extraction prompts)", "",
              "Skill lines (of at least 20 characters) that appear verbatim (exact) or nearly "
              "(fuzzy, 5-gram overlap) in the agent's answer, summed over every skill.", "",
              "| Env | Request | in-context exact | in-context fuzzy | latent exact | latent fuzzy "
              "| skill lines |", "|---|---|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["env"], r["request"]) for r in leaks))
    for env, req in keys:
      sel = lambda m: [r for r in leaks
                       if r["env"] == env and r["request"] == req and r["mode"] == m]
      inc, lat = sel("incontext"), sel("latent")
      total = sum(r["lines"] for r in inc)
      lines.append(f"| {env} | {req} | {sum(r['leaked'] for r in inc)} | "
                   f"{sum(r['leaked_fuzzy'] for r in inc)} | {sum(r['leaked'] for r in lat)} | "
                   f"{sum(r['leaked_fuzzy'] for r in lat)} | {total} |")
    lines.append("")
  return lines


def _run_section(out: str, config) -> list[str]:
  run = _load(out, ".", "run.json") or {}
  a, q, t = config.alfworld, config.searchqa, config.stage2.train
  subsets = {k: v for k, v in config.subsets.to_dict().items() if v}
  lines = ["## Run", "",
           f"Scale: **{config.scale}**. ALFWorld: {a.num_games} games per split (-1 = all), at "
           f"most {a.max_steps} steps, {a.max_new_tokens} new tokens per step; Search-QA: "
           f"{q.num_per_type} questions per type (-1 = all), {q.max_new_tokens} new tokens per "
           f"step; Stage 2: {t.steps} steps of {t.batch_size} conversations of up to "
           f"{config.stage2.data.seq_len} tokens; smaller sets for {subsets or 'no stage'}.", "",
           "Commands (each invocation; reruns resume):",
           "", "```"] + [inv["command"] or "(called from Python)"
                         for inv in run.get("invocations", [])] + ["```", "",
           f"Machine: {_machine()}.", "", "| Stage | wall time | finished |", "|---|---:|---|"]
  total = 0.0
  for stage in STAGE_ORDER:
    m = stages.read_marker(out, stage)
    if stage == "report":
      lines.append("| report | (this stage) | |")
    elif m is None:
      lines.append(f"| {stage} | not run | |")
    else:
      total += m["seconds"]
      lines.append(f"| {stage} | {m['seconds'] / 60:.1f} min | {m['finished']} |")
  lines += [f"| total | {total / 60:.1f} min | |", ""]
  s2 = stages.read_marker(out, "stage2")
  if s2:
    s = s2["summary"]
    lines += [f"Stage 2: {s.get('step')} steps from {s.get('init_from')}; last training loss "
              f"{format_number(s.get('loss'), 3)}.", ""]
  pl = stages.read_marker(out, "plain_lora")
  if pl and "last_loss" in pl["summary"]:
    s = pl["summary"]
    lines += [f"Plain LoRA: {s['steps']} steps, loss {s['first_loss']:.3f} → "
              f"{s['last_loss']:.3f}.", ""]
  return lines


def write(out: str, config) -> str:
  """Writes OUT/report.md from the stages' results; returns its path."""
  agents = _load(out, "agents")
  lines = ["# LatentSkill reproduction", "",
           f"Scale `{config.scale}`: backbone `{config.stage2.get('model')}`, "
           f"Stage-1 compiler `{config.stage1 or 'none (fresh)'}`. Rates are success (ALFWorld) "
           "or exact match (Search-QA) in %, with 95% Wilson intervals; the paper's Qwen3-8B "
           "numbers stand beside ours for orientation only (another model, other data).", "",
           "## Reading", "", *(reading(agents) if agents else ["* The agents stage has not run."]),
           "", "\"Clearly\" means the 95% intervals do not overlap; \"beats (intervals "
           "overlap)\" is a higher rate that these sample sizes cannot tell from chance.", ""]
  sections = (("agents", _agents_section), ("alpha", _alpha_section),
              ("composition", _composition_section), ("geometry", _geometry_section),
              ("robustness", lambda rob: _robustness_section(
                  rob, _load(out, "robustness", "exposure.json"))))
  for stage, section in sections:
    results = _load(out, stage)
    if results:
      lines += section(results)
  lines += _run_section(out, config)
  path = os.path.join(out, "report.md")
  atomic_write_text(path, "\n".join(lines) + "\n")
  return path
