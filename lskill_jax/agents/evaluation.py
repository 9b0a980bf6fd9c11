"""One evaluation: every requested mode on the configured ALFWorld splits or Search-QA questions.

`evaluate` builds the episodes of each (split, mode), skips those the results file already
holds for the same settings, runs the rest in batches, and writes `results.md` and
`results.json` (report.py) to the work directory. Generation and compilation come in as
functions, so tests can script the model and use random adapters.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Sequence

from lskill_jax.agents import prompts, report, skills as skill_docs, tasks, teacher
from lskill_jax.agents.episodes import AlfworldEpisode, SearchQAEpisode
from lskill_jax.agents.results import ResultsLog, episode_key, settings_id, text_digest
from lskill_jax.agents.runner import GenerateFn, backbone_generate_fn, run_episodes

# Bump when prompts or parsing change, so old results are not mixed with new ones.
PROMPT_VERSION = 1
RESULTS_FILE = "episodes.jsonl"
CompileFn = Callable[[list[str]], list]


@dataclasses.dataclass
class Runtime:
  """What an evaluation needs besides its config: the model as functions, and where to write."""
  tokenizer: object
  generate_fn: GenerateFn
  model_name: str
  workdir: str
  compile_fn: CompileFn | None = None
  compiler_name: str | None = None     # shown in the report (e.g. the checkpoint path)
  compiler_id: str | None = None       # identifies the compiler in the settings (content hash)
  alpha: float = 1.0
  show_progress: bool = True

  @property
  def log(self) -> ResultsLog:
    return ResultsLog(os.path.join(self.workdir, RESULTS_FILE))


def evaluate_backbone(bb, config, modes: Sequence[str], workdir: str, *,
                      compile_fn: CompileFn | None = None, compiler_name: str | None = None,
                      compiler_id: str | None = None, alpha: float = 1.0,
                      show_progress: bool = True) -> dict:
  """`evaluate` with greedy generation on a loaded backbone."""
  rt = Runtime(bb.tokenizer, backbone_generate_fn(bb, config.max_new_tokens), bb.source or "model",
               workdir, compile_fn, compiler_name, compiler_id, alpha, show_progress)
  return evaluate(config, modes, rt)


def evaluate(config, modes: Sequence[str], rt: Runtime) -> dict:
  """Runs `modes` on the environment `config.env` names; returns the report it wrote."""
  modes = [prompts.check_mode(m) for m in modes]
  if not modes:
    raise ValueError("no modes to evaluate; pass some of " + ", ".join(prompts.MODES))
  if "latent" in modes and rt.compile_fn is None:
    raise ValueError("the latent mode needs a skill compiler: pass --compiler=CHECKPOINT_DIR "
                     "(or drop 'latent' from --modes).")
  if rt.tokenizer is None:
    raise ValueError("the backbone has no tokenizer; load a checkpoint that ships one.")
  os.makedirs(rt.workdir, exist_ok=True)
  runs = {"alfworld": _alfworld_runs, "searchqa": _searchqa_runs}
  if config.env not in runs:
    raise ValueError(f"config.env must be one of {sorted(runs)}, got {config.env!r}.")
  results = runs[config.env](config, modes, rt)
  rep = report.build(config.env, results, meta={
      "model": rt.model_name, "compiler": rt.compiler_name, "alpha": rt.alpha,
      "config": json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)})
  report.write(rep, rt.workdir)
  return rep


def _compile_skills(rt: Runtime, docs: dict[str, skill_docs.SkillDoc]) -> dict:
  names = sorted(docs)
  adapters = rt.compile_fn([docs[n].text for n in names])
  if len(adapters) != len(names):
    raise ValueError(f"the compiler returned {len(adapters)} adapters for {len(names)} skills.")
  return dict(zip(names, adapters))


def _run(rt: Runtime, env: str, split: str, mode: str, settings: dict, episodes_by_id: dict,
         make_episode, adapters: dict | None, batch_size: int) -> list[dict]:
  """Runs the unfinished episodes of one (split, mode) and returns all their records."""
  log = rt.log
  sid = settings_id(settings)
  key_of = lambda eid: episode_key(env, split, mode, sid, eid)
  keys = {key_of(eid) for eid in episodes_by_id}
  done = log.finished_keys() & keys
  todo = [eid for eid in episodes_by_id if key_of(eid) not in done]

  def on_finish(record: dict) -> None:
    log.append({**record, "key": key_of(record["id"]), "split": split, "mode": mode,
                "settings_id": sid, "settings": settings})

  progress = None
  if rt.show_progress:
    from tqdm import tqdm
    progress = tqdm(total=len(keys), initial=len(done), desc=f"{env} {split} {mode}",
                    unit="episode", dynamic_ncols=True)
  try:
    adapter_fn = (lambda ep: adapters[ep.skill]) if mode == "latent" else None
    run_episodes((make_episode(episodes_by_id[eid]) for eid in todo), tokenizer=rt.tokenizer,
                 generate_fn=rt.generate_fn, batch_size=batch_size, adapter_fn=adapter_fn,
                 alpha=rt.alpha, on_finish=on_finish, progress=progress)
  finally:
    if progress is not None:
      progress.close()
  return [r for r in log.records() if r.get("key") in keys]


def _settings(config, rt: Runtime, env: str, split: str, mode: str, skill_texts, demo_texts,
              **extra) -> dict:
  settings = {"env": env, "split": split, "mode": mode, "model": rt.model_name,
              "prompt_version": PROMPT_VERSION, "max_new_tokens": config.max_new_tokens,
              "max_steps": config.max_steps, **extra}
  if mode in ("incontext", "latent"):
    settings["skills"] = text_digest(skill_texts)
  if mode == "fewshot":
    settings["demos"] = text_digest(demo_texts)
  if mode == "latent":
    settings.update(alpha=rt.alpha, compiler=rt.compiler_id or rt.compiler_name)
  return settings


# ----------------------------------------------------------------------------- ALFWorld


def _alfworld_runs(config, modes, rt: Runtime) -> dict:
  docs = skill_docs.load_skills(config.skill_dir, "alfworld")
  skill_for = lambda t: skill_docs.skill_name_for("alfworld", t)
  adapters = _compile_skills(rt, docs) if "latent" in modes else None
  task_types = tuple(config.task_types) if config.task_types else None
  games_by_split = {
      split: tasks.alfworld_games(split, config.data_root, num_games=config.num_games,
                                  task_types=task_types, prefer_official=config.prefer_official)
      for split in config.splits}
  demos = None
  if "fewshot" in modes:
    needed = {g.task_type for games in games_by_split.values() for g in games}
    plays = tasks.alfworld_expert_plays(needed, config.data_root, split=config.fewshot_split,
                                        prefer_official=config.prefer_official)
    demos = {t: teacher.alfworld_demo(p, config.obs_chars) for t, p in plays.items()}
  results = {}
  for split, games in games_by_split.items():
    by_id = {g.id: g for g in games}
    for mode in modes:
      def make(g, mode=mode):
        name = skill_for(g.task_type)
        return AlfworldEpisode(
            g.id, g.game_file, g.task_type, mode=mode, skill=name,
            skill_text=docs[name].text if mode == "incontext" else None,
            demo_text=demos[g.task_type] if mode == "fewshot" else None,
            max_steps=config.max_steps, history_length=config.history_length,
            obs_chars=config.obs_chars, fallback_action=config.fallback_action)

      settings = _settings(config, rt, "alfworld", split, mode,
                           {n: d.text for n, d in docs.items()}, demos,
                           history_length=config.history_length, obs_chars=config.obs_chars,
                           fallback_action=config.fallback_action)
      results.setdefault(split, {})[mode] = _run(rt, "alfworld", split, mode, settings, by_id,
                                                 make, adapters, config.batch_size)
  return results


# ----------------------------------------------------------------------------- Search-QA


def _searchqa_runs(config, modes, rt: Runtime) -> dict:
  docs = skill_docs.load_skills(config.skill_dir, "searchqa")
  skill_for = lambda t: skill_docs.skill_name_for("searchqa", t)
  skill_types = tuple(config.skill_types) if config.skill_types else None
  questions = tasks.searchqa_questions(config.data_dir, config.split,
                                       num_per_type=config.num_per_type, skill_types=skill_types)
  retriever = tasks.searchqa_retriever(config.data_dir, config.retriever_factory)
  adapters = _compile_skills(rt, docs) if "latent" in modes else None
  demos = None
  if "fewshot" in modes:
    plays = tasks.searchqa_teacher_plays(config.data_dir, retriever,
                                         {q["skill_type"] for q in questions},
                                         split=config.fewshot_split)
    demos = {t: prompts.searchqa_demo_text(p) for t, p in plays.items()}
  by_id = {str(q["id"]): q for q in questions}
  results = {}
  for mode in modes:
    def make(q, mode=mode):
      name = skill_for(q["skill_type"])
      return SearchQAEpisode(
          q, retriever, mode=mode, skill=name,
          skill_text=docs[name].text if mode == "incontext" else None,
          demo_text=demos[q["skill_type"]] if mode == "fewshot" else None,
          max_steps=config.max_steps, topk=config.topk,
          invalid_ends_episode=config.invalid_ends_episode)

    settings = _settings(config, rt, "searchqa", config.split, mode,
                         {n: d.text for n, d in docs.items()}, demos, topk=config.topk,
                         invalid_ends_episode=config.invalid_ends_episode,
                         retriever=config.retriever_factory or "bm25")
    results.setdefault(config.split, {})[mode] = _run(rt, "searchqa", config.split, mode,
                                                      settings, by_id, make, adapters,
                                                      config.batch_size)
  return results
