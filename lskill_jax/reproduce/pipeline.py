"""The reproduction's stages: data, Stage 2, the plain-LoRA baseline, the agents with their
controls, the α sweep, composition, geometry, robustness and exposure, and the report.

    ctx = Context(out, config)                  # config: configs/reproduce_<scale>.py
    run_stages(out, STAGES, ctx)                # stages.py: markers, skip what is done

Each stage writes under OUT/<stage>/ and returns a JSON summary; the evaluations go through
`agents.evaluate` (one work directory per condition, so each resumes from its episodes.jsonl)
and their compact reports land in OUT/<stage>/results.json for the report stage.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import ml_collections
import numpy as np

from lskill_jax.adapter.adapter import Adapter
from lskill_jax.agents import evaluation, exposure, skills as skill_files, teacher, variants
from lskill_jax.agents.runner import fixed_shape_generate_fn
from lskill_jax.compiler import adapter_geometry, composition, shipped
from lskill_jax.compiler.skill_compiler import SkillCompiler
from lskill_jax.envs import alfworld as aw
from lskill_jax.envs import searchqa as sq
from lskill_jax.experiment import backbone_from_config
from lskill_jax.io import write_json
from lskill_jax.reproduce import report
from lskill_jax.training import plain_lora
from lskill_jax.training.trainer import train

ENVS = ("alfworld", "searchqa")
CONTROLS = ("latent_other_skill", "latent_nonsense", "latent_empty", "plain_lora")


class ReproduceError(ValueError):
  """The reproduction cannot start or go on as configured (the message says what to change)."""


class StageStopped(ReproduceError):
  """A stage was stopped (SIGTERM, Ctrl-C) after saving its progress: it is not marked done,
  and rerunning the same command resumes it."""


@dataclasses.dataclass
class Context:
  """What the stages share: the output folder, the scale's config, and the loaded model."""
  out: str
  config: ml_collections.ConfigDict
  mesh: object = None
  show_progress: bool = True

  @functools.cached_property
  def bb(self):
    return backbone_from_config(self.config.stage2, mesh=self.mesh,
                                seed=self.config.stage2.get("backbone_seed", 0))

  @property
  def alfworld_root(self) -> str:
    return os.path.join(self.out, "data", "alfworld")

  @property
  def searchqa_dir(self) -> str:
    return os.path.join(self.out, "data", "searchqa")

  @property
  def teacher_file(self) -> str:
    return os.path.join(self.out, "data", "skill_ift", "train.json")

  @property
  def stage2_dir(self) -> str:
    return os.path.join(self.out, "stage2", "workdir")

  @property
  def plain_lora_dir(self) -> str:
    return os.path.join(self.out, "plain_lora", "adapter")

  def skill_dir(self, env: str) -> str:
    return os.path.join(self.config.skills_dir, env)

  @functools.cached_property
  def compiler(self) -> SkillCompiler:
    """The Stage-2 compiler (the latest saved step of OUT/stage2/workdir)."""
    return SkillCompiler.load(self.stage2_dir, self.bb)

  def compile_fn(self, texts: Sequence[str]) -> list[Adapter]:
    return self.compiler.compile(list(texts), overlong=self.config.compile_overlong)

  def stage1_path(self) -> str:
    """Where Stage 2 starts: the shipped compiler, a named checkpoint, or "" (fresh)."""
    s = self.config.stage1
    if s == "shipped":
      try:
        return shipped.find_for(self.bb)
      except shipped.NoShippedCompilerError as err:
        raise ReproduceError(f"{err} Pass --stage1=CHECKPOINT_DIR (a Stage-1 run).") from None
    if s and not os.path.exists(s):
      raise ReproduceError(f"--stage1={s!r}: no such checkpoint directory.")
    return s

  def generate_fn(self, max_new_tokens: int, rows: int):
    return fixed_shape_generate_fn(self.bb, max_new_tokens, rows, self.config.prompt_bucket)

  def evaluate(self, env: str, workdir: str, modes: Sequence[str], *,
               compile_fn: Callable | None = None, condition: str = "",
               alpha: float = 1.0, skill_dir: str | None = None,
               overrides: dict | None = None) -> dict:
    """One `agents.evaluate` run of `modes` in `workdir`; returns its compact report.

    compile_fn replaces the Stage-2 compiler (the controls); condition names it in the
    settings, so its episodes never mix with the compiler's.
    """
    cfg = self.config[env].copy_and_resolve_references()
    if env == "alfworld":
      cfg.data_root, cfg.prefer_official = self.alfworld_root, False
    else:
      cfg.data_dir = self.searchqa_dir
    cfg.skill_dir = skill_dir or self.skill_dir(env)
    cfg.update(dict(overrides or {}))
    latent = "latent" in modes
    cid = self.compiler.checkpoint_id if latent else None
    rt = evaluation.Runtime(
        self.bb.tokenizer, self.generate_fn(cfg.max_new_tokens, cfg.batch_size),
        self.bb.source or self.config.stage2.get("name", "model"), workdir,
        compile_fn=(compile_fn or self.compile_fn) if latent else None,
        compiler_name=self.stage2_dir if latent else None,
        compiler_id=f"{cid}/{condition}" if condition and latent else cid,
        alpha=alpha, show_progress=self.show_progress)
    return report.compact(evaluation.evaluate(cfg, list(modes), rt))


# ----------------------------------------------------------------------------- data


def stage_data(ctx: Context, stage_dir: str) -> dict:
  """ALFWorld games and Search-QA data (each made once, kept on a rerun) and the teacher set."""
  c = ctx.config.data
  summary = {"alfworld": {}, "searchqa": {}}
  for split, num in c.games.items():
    done = os.path.join(stage_dir, f"alfworld_{split}.json")
    if num > 0 and not os.path.exists(done):
      # overwrite: a split cut short by an interruption is made again from the start.
      games = list(aw.generate_split(ctx.alfworld_root, split, num, seed=c.seed,
                                     task_types=tuple(c.task_types) or aw.TASK_TYPES,
                                     workers=c.workers, overwrite=True))
      write_json(done, {"games": len(games)})
    summary["alfworld"][split] = num
  if not os.path.exists(os.path.join(ctx.searchqa_dir, "summary.json")):
    _, _, splits = sq.write_dataset(ctx.searchqa_dir, seed=c.seed, per_type=c.searchqa_per_type,
                                    test_fraction=c.searchqa_test_fraction)
    write_json(os.path.join(ctx.searchqa_dir, "summary.json"),
               {n: len(r) for n, r in splits.items()})
  summary["searchqa"] = {"per_type": c.searchqa_per_type, "test_fraction": c.searchqa_test_fraction}
  if not os.path.exists(ctx.teacher_file):
    tok = ctx.bb.tokenizer
    alf, alf_stats = teacher.alfworld_teacher_records(
        tok, skills_dir=ctx.config.skills_dir, data_root=ctx.alfworld_root,
        num_games=c.teacher_alfworld, workers=c.workers, prefer_official=False)
    sqa, sqa_stats = teacher.searchqa_teacher_records(
        tok, skills_dir=ctx.config.skills_dir, data_dir=ctx.searchqa_dir, num=c.teacher_searchqa)
    write_json(ctx.teacher_file, alf + sqa, ensure_ascii=False, indent=1)
    write_json(os.path.join(stage_dir, "teacher.json"),
               {"alfworld": {"records": len(alf), **alf_stats},
                "searchqa": {"records": len(sqa), **sqa_stats}}, indent=1)
  summary["teacher_file"] = ctx.teacher_file
  return summary


# ----------------------------------------------------------------------------- training


def _stage2_config(ctx: Context) -> ml_collections.ConfigDict:
  cfg = ctx.config.stage2.copy_and_resolve_references()
  cfg.data.train = ctx.teacher_file
  cfg.init_from = ctx.stage1_path()
  return cfg


def stage_stage2(ctx: Context, stage_dir: str) -> dict:
  """Stage 2 on the teacher set, warm-started from the Stage-1 compiler; resumes from its
  Orbax checkpoints when interrupted."""
  cfg = _stage2_config(ctx)
  out = train(cfg, ctx.stage2_dir, mesh=ctx.mesh, backbone=ctx.bb)
  if out.get("stopped_by"):  # a partial Stage 2 must not pass for a finished one
    raise StageStopped(f"Stage 2 stopped on {out['stopped_by']} after saving step {out['step']}; "
                       "rerun the same command to resume it.")
  return {"step": out["step"], "init_from": cfg.init_from or "(fresh compiler)",
          "loss": out.get("loss"), "val": {k: v for k, v in out.items() if k.startswith("val/")}}


def stage_plain_lora(ctx: Context, stage_dir: str) -> dict:
  """The cost-matched baseline: one LoRA of the compiler's targets and rank trained directly
  on the same trajectories (no compiler, no skill text)."""
  if os.path.isdir(ctx.plain_lora_dir):
    return {"adapter": ctx.plain_lora_dir, "reused": True}
  cfg = _stage2_config(ctx)
  spec = ctx.compiler.spec
  p = ctx.config.plain_lora
  try:  # checkpoints in stage_dir/workdir: an interrupted run resumes there
    adapter, losses = plain_lora.train_on_config(
        ctx.bb, cfg, rank=spec.rank, targets=spec.targets, steps=p.steps,
        batch_size=p.batch_size, lr=p.lr, seed=p.seed,
        workdir=os.path.join(stage_dir, "workdir"), show_progress=ctx.show_progress)
  except plain_lora.TrainingStopped as e:
    raise StageStopped(f"The plain LoRA stopped on {e.signal_name} after saving step {e.step}; "
                       "rerun the same command to resume it.") from e
  adapter.save(ctx.plain_lora_dir)
  write_json(os.path.join(stage_dir, "losses.json"), losses)
  return {"adapter": ctx.plain_lora_dir, "steps": p.steps, "first_loss": losses[0],
          "last_loss": losses[-1]}


# ----------------------------------------------------------------------------- controls


def _same_for_all(adapter: Adapter) -> Callable:
  return lambda texts: [adapter] * len(texts)


def other_skill_fn(compile_fn: Callable) -> Callable:
  """Each skill gets the adapter of the next skill in the list (another task type's): the
  evaluation compiles every skill of an environment in one call, sorted by name."""
  return lambda texts: list(compile_fn(list(texts[1:]) + list(texts[:1])))


def nonsense_fn(compiler: SkillCompiler, overlong: str, seed: int) -> Callable:
  """Each skill gets the adapter of random token ids (no special tokens), as many as the
  skill has, seeded by the skill's position, and compiled as the skill would be (`overlong`:
  truncated, or in chunks whose adapters are averaged)."""
  tok = compiler.backbone.tokenizer
  special = set(tok.all_special_ids)
  vocab = np.array([i for i in range(len(tok)) if i not in special])

  def fn(texts):
    ids = [np.random.default_rng([seed, i]).choice(vocab, size=max(len(compiler.tokenize(t)), 1))
           for i, t in enumerate(texts)]
    return compiler.compile_ids(ids, overlong="chunk" if overlong == "error" else overlong)
  return fn


def empty_fn(compiler: SkillCompiler) -> Callable:
  """Every skill gets the adapter of an empty document: the memory slots alone."""
  ad = compiler.compile_tokens(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32)).row(0)
  return _same_for_all(ad)


def control_fns(ctx: Context) -> dict[str, Callable]:
  fns = {"latent_other_skill": other_skill_fn(ctx.compile_fn),
         "latent_nonsense": nonsense_fn(ctx.compiler, ctx.config.compile_overlong,
                                        ctx.config.nonsense_seed),
         "latent_empty": empty_fn(ctx.compiler)}
  if os.path.isdir(ctx.plain_lora_dir):
    fns["plain_lora"] = _same_for_all(Adapter.load(ctx.plain_lora_dir, backbone=ctx.bb))
  return fns


# ----------------------------------------------------------------------------- agents


def stage_agents(ctx: Context, stage_dir: str) -> dict:
  """vanilla / fewshot / incontext / latent, then the latent agent with each control adapter."""
  results = {}
  for env in ENVS:
    rep = ctx.evaluate(env, os.path.join(stage_dir, env, "modes"),
                       ["vanilla", "fewshot", "incontext", "latent"])
    results[env] = {"modes": rep}
    for name, fn in control_fns(ctx).items():
      results[env][name] = ctx.evaluate(env, os.path.join(stage_dir, env, name), ["latent"],
                                        compile_fn=fn, condition=name)
  write_json(os.path.join(stage_dir, "results.json"), results, indent=1)
  return {"conditions": sorted(results["alfworld"])}


def stage_alpha(ctx: Context, stage_dir: str) -> dict:
  """The latent agent at every α of the sweep; a table and a plot (report stage)."""
  results = {}
  for env in ENVS:
    for alpha in ctx.config.alphas:
      results.setdefault(env, {})[f"{alpha:g}"] = ctx.evaluate(
          env, os.path.join(stage_dir, env, f"alpha_{alpha:g}"), ["latent"], alpha=alpha,
          overrides=ctx.config.subsets.alpha.get(env))
  write_json(os.path.join(stage_dir, "results.json"), results, indent=1)
  report.alpha_plot(os.path.join(stage_dir, "alpha.png"), results)
  return {"alphas": list(ctx.config.alphas)}


def _types_for(env: str, skill_names: Sequence[str]) -> tuple[str, ...]:
  known = aw.TASK_TYPES if env == "alfworld" else sq.SKILL_TYPES
  return tuple(t for t in known if skill_files.skill_name_for(env, t) in skill_names)


def stage_composition(ctx: Context, stage_dir: str) -> dict:
  """Two skills composed three ways (compose()), each evaluated on both skills' episodes,
  beside each episode's own single skill."""
  results = {}
  for env in ENVS:
    names = tuple(ctx.config.compositions[env])
    parts = {n: skill_files.load_components(ctx.skill_dir(env), n) for n in names}
    types = _types_for(env, names)
    overrides = {**dict(ctx.config.subsets.composition.get(env, {})),
                 ("task_types" if env == "alfworld" else "skill_types"): types}
    rows = {"own_skill": ctx.evaluate(env, os.path.join(stage_dir, env, "own_skill"), ["latent"],
                                      overrides=overrides)}
    for method in composition.METHODS:
      adapter = composition.compose(method, ctx.compile_fn, parts)
      rows[method] = ctx.evaluate(env, os.path.join(stage_dir, env, method), ["latent"],
                                  compile_fn=_same_for_all(adapter), condition=f"compose/{method}",
                                  overrides=overrides)
    results[env] = {"skills": list(names), "types": list(types), "rows": rows}
  write_json(os.path.join(stage_dir, "results.json"), results, indent=1)
  return {env: results[env]["skills"] for env in ENVS}


# ----------------------------------------------------------------------------- geometry


def geometry_items(skills_dir: str, variants_dir: str) -> list[tuple[str, str, str]]:
  """(label, group, text) for every shipped skill, each distinct component and every variant."""
  items, seen = [], set()
  for env in ENVS:
    root = os.path.join(skills_dir, env)
    for name, doc in skill_files.load_skills(root, env).items():
      items.append((f"{name}", f"{env} skill", doc.text))
      for part, text in skill_files.load_components(root, name).items():
        if text not in seen:  # a shared component (an environment's general part) once
          seen.add(text)
          owner = env if part == "general" else name
          items.append((f"{owner}/{part}", f"{env} component", text))
    written = variants.write_variants(variants_dir, skills_dir, env)
    for variant, vdir in written.items():
      for name, doc in skill_files.load_skills(vdir, env).items():
        items.append((f"{name}~{variant}", f"{env} variant", doc.text))
  return items


def stage_geometry(ctx: Context, stage_dir: str) -> dict:
  """Adapters of all skills, components and variants: distances, 2-D MDS, labelled PNG."""
  items = geometry_items(ctx.config.skills_dir, os.path.join(stage_dir, "variants"))
  labels, groups, texts = zip(*items)
  adapters = ctx.compile_fn(texts)
  dist = adapter_geometry.distance_matrix(adapters)
  coords = adapter_geometry.classical_mds(dist)
  adapter_geometry.scatter_plot(os.path.join(stage_dir, "geometry.png"), coords, labels, groups,
                                title="Compiled adapters (MDS of ΔW distances)")
  result = {"labels": list(labels), "groups": list(groups), "distances": dist.tolist(),
            "coords": coords.tolist(), **report.geometry_summary(labels, groups, dist)}
  write_json(os.path.join(stage_dir, "results.json"), result, indent=1)
  return {"adapters": len(labels)}


# ----------------------------------------------------------------------------- robustness


def stage_robustness(ctx: Context, stage_dir: str) -> dict:
  """In-context and latent agents with each skill variant (and the originals on the same
  episodes); extraction prompts against both, counting leaked skill lines."""
  results, overrides = {}, ctx.config.subsets.robustness
  for env in ENVS:
    dirs = {"original": ctx.skill_dir(env),
            **variants.write_variants(os.path.join(stage_dir, "skills"), ctx.config.skills_dir,
                                      env, variants=tuple(ctx.config.variants))}
    results[env] = {v: ctx.evaluate(env, os.path.join(stage_dir, env, v), ["incontext", "latent"],
                                    skill_dir=d, condition=f"variant/{v}",
                                    overrides=overrides.get(env))
                    for v, d in dirs.items()}
  write_json(os.path.join(stage_dir, "results.json"), results, indent=1)
  generate = ctx.generate_fn(ctx.config.exposure_max_new_tokens, len(exposure.EXTRACTION_PROMPTS))
  leaks = []
  for env in ENVS:
    docs = skill_files.load_skills(ctx.skill_dir(env), env)
    adapters = dict(zip(docs, ctx.compile_fn([d.text for d in docs.values()])))
    for name, doc in docs.items():
      for mode in exposure.EXPOSURE_MODES:
        for row in exposure.run_extraction(generate, ctx.bb.tokenizer, env=env, mode=mode,
                                           skill_text=doc.text, adapter=adapters[name]):
          leaks.append({"env": env, "skill": name, **row})
  write_json(os.path.join(stage_dir, "exposure.json"), leaks, indent=1, ensure_ascii=False)
  return {"variants": list(ctx.config.variants), "extraction_answers": len(leaks)}


# ----------------------------------------------------------------------------- report


def stage_report(ctx: Context, stage_dir: str) -> dict:
  path = report.write(ctx.out, ctx.config)
  return {"report": path}


STAGES = (("data", stage_data), ("stage2", stage_stage2), ("plain_lora", stage_plain_lora),
          ("agents", stage_agents), ("alpha", stage_alpha), ("composition", stage_composition),
          ("geometry", stage_geometry), ("robustness", stage_robustness),
          ("report", stage_report))
STAGE_NAMES = tuple(n for n, _ in STAGES)
