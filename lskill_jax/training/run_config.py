"""A run's recorded config, checked against the new one before a resume writes anything.

    check_values(config)                                     # ConfigError on unusable values
    changes = check_resume(workdir, config, spec, fingerprint, allow=("train.lr",))
    record(workdir, config, changes, step)                   # once the restore has worked

WORKDIR/config.json is the config the run was last trained with; config_changes.jsonl gets one
line per resume that changed fields on purpose. Configs are compared field by field on dotted
names, so a field added to the configs later needs nothing here: a field the recorded config
lacks is compared against its default (configs/training.py, CompilerSpec), which is what the
run used before the field existed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import jax
import ml_collections

from lskill_jax.compiler import checkpoint as compiler_ckpt
from lskill_jax.compiler import hypernet
from lskill_jax.data import stage1
from lskill_jax.training.step import CONTRASTIVE_NEGATIVES, FREEZABLE, TARGET_WEIGHTINGS
from lskill_jax.io import atomic_write_text

CONFIG_FILE, CHANGES_FILE = "config.json", "config_changes.jsonl"

# Fields that change neither the trained state nor what validation measures (how often the run
# logs, validates and saves; memory and speed knobs; the device layout). A larger train.steps is
# allowed too: people extend runs.
ALWAYS_ALLOWED = ("train.log_every", "train.eval_every", "train.save_every",
                  "train.keep_checkpoints", "train.async_checkpointing", "train.progress_bar",
                  "train.max_bad_steps", "train.eval_batch_size", "train.remat",
                  "train.loss_chunk", "compiler.remat", "mesh")
ALL = "*"


class ConfigError(ValueError):
  """A training config cannot be used as given; the message names the field and the fix."""


class ConfigChangedError(ConfigError):
  """A workdir is being resumed with a config that differs from the one it was trained with."""


_MISSING = type("_Missing", (), {"__repr__": lambda self: "<not recorded>"})()


def as_dict(config) -> dict:
  """A config as plain JSON data (tuples become lists), the form config.json holds."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def field_defaults(stage: int) -> dict[str, Any]:
  """Dotted field -> default value, for fields an older config.json does not record."""
  spec_fields = {f.name: f.default for f in dataclasses.fields(hypernet.CompilerSpec)
                 if f.name != "backbone" and f.default is not dataclasses.MISSING}
  out = flatten(as_dict({"compiler": spec_fields}))
  try:  # the repository's config defaults; a copy installed without configs/ has none
    from configs import training
  except ImportError:
    return out
  base = ml_collections.ConfigDict({"compiler": ml_collections.ConfigDict()})
  out.update(flatten(as_dict(training.with_training(base, stage))))
  return out


def differences(old: dict, new: dict, defaults: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{dotted field: (recorded, new)} for each field of `new` whose value differs.

  Fields only the recorded config has are ignored: the code no longer reads them.
  """
  out: dict[str, tuple[Any, Any]] = {}

  def walk(o, n, path):
    if o is _MISSING and isinstance(n, dict):
      o = {}
    if isinstance(o, dict) and isinstance(n, dict):
      for k, v in n.items():
        key = ".".join(path + (k,))
        walk(o[k] if k in o else defaults.get(key, _MISSING), v, path + (k,))
    elif o != n:
      out[".".join(path)] = (o, n)

  walk(old, new, ())
  return out


def _matches(field: str, allowed: str) -> bool:
  return allowed == ALL or field == allowed or field.startswith(allowed + ".")


def frozen_groups(t) -> tuple[str, ...]:
  """train.frozen as a tuple of group names; a command line's "memory,metalora" arrives as one
  string in a tuple, so names are split at commas."""
  value = t.get("frozen", ())
  items = (value,) if isinstance(value, str) else tuple(value)
  return tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())


def check_values(config) -> None:
  """Refuses values the loop cannot use (instead of a crash or NaNs later)."""
  t = config.train
  for name in ("steps", "batch_size", "accum", "log_every", "save_every"):
    if not isinstance(t[name], int) or t[name] < 1:
      raise ConfigError(f"train.{name}={t[name]!r} must be a positive integer.")
  if t.eval_every < 0:
    raise ConfigError(f"train.eval_every={t.eval_every} must be >= 0 (0 = no validation).")
  if t.batch_size % t.accum:
    raise ConfigError(f"train.batch_size={t.batch_size} must be a multiple of train.accum={t.accum}.")
  if not (isinstance(t.lr, (int, float)) and math.isfinite(t.lr) and t.lr >= 0):
    raise ConfigError(f"train.lr={t.lr!r} must be a finite number >= 0.")
  for name in ("contrastive_weight", "distill_weight"):
    value = t.get(name, 0.0)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
      raise ConfigError(f"train.{name}={value!r} must be a finite number >= 0 (0 = off).")
  if t.get("contrastive_negatives", "previous") not in CONTRASTIVE_NEGATIVES:
    raise ConfigError(f"train.contrastive_negatives={t.contrastive_negatives!r} must be one of "
                      f"{CONTRASTIVE_NEGATIVES} ('previous': the row before in the batch; "
                      "'same_source': the nearest earlier row from the same corpus, for data.mix).")
  frozen = frozen_groups(t)
  if not set(frozen) <= set(FREEZABLE) or len(set(frozen)) != len(frozen) or len(frozen) == len(FREEZABLE):
    raise ConfigError(f"train.frozen={t.frozen!r} must name distinct compiler groups from "
                      f"{FREEZABLE}, not all of them, e.g. --config.train.frozen=memory,metalora "
                      "(the document encode then runs forward only).")
  if t.get("target_weighting", "uniform") not in TARGET_WEIGHTINGS:
    raise ConfigError(f"train.target_weighting={t.target_weighting!r} must be one of "
                      f"{TARGET_WEIGHTINGS} ('uniform': every target token counts once; "
                      "'context_gain': by how much the document helps predict it).")
  if config.get("init_recalibrate", False):
    if not config.get("init_from"):
      raise ConfigError("init_recalibrate=True re-measures the statistics of params loaded by "
                        "init_from; set init_from to the run to start from, or drop init_recalibrate "
                        "(a run from scratch measures them anyway).")
    if config.compiler.get("state_norm", "none") != "standardize":
      raise ConfigError("init_recalibrate=True needs compiler.state_norm='standardize' (the only "
                        "norm with measured statistics).")
  fraction = config.get("data", {}).get("mix_fraction", 0.0)
  if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
    raise ConfigError(f"data.mix_fraction={fraction!r} must be a number in [0, 1): the share of "
                      "training examples drawn from data.mix.")
  if fraction and not config.data.get("mix"):
    raise ConfigError(f"data.mix_fraction={fraction} needs data.mix, the jsonl corpus to mix in "
                      "(e.g. the items task: launch.build_corpus --items=8000).")
  if fraction and config.get("stage", 1) != 1:
    raise ConfigError("data.mix is a Stage-1 option; Stage 2 reads its trajectories only.")
  data = config.get("data", {})
  for field, allowed in (("overlong", stage1.OVERLONG), ("mix_overlong", ("",) + stage1.OVERLONG)):
    value = data.get(field, allowed[0])
    if value not in allowed:
      raise ConfigError(f"data.{field}={value!r} must be 'skip' (drop documents over "
                        "data.seq_len) or 'split' (cut them at paragraphs into pieces that fit)"
                        + (", or '' (as data.overlong)." if "" in allowed else "."))
  if t.get("contrastive_weight", 0.0) and t.batch_size // t.accum < 2:
    raise ConfigError(f"train.contrastive_weight needs micro-batches of at least 2 examples (another "
                      f"document's adapter comes from the same micro-batch); batch_size={t.batch_size} "
                      f"/ accum={t.accum} gives {t.batch_size // t.accum}.")


def read(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      blob = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: not valid JSON ({e}); restore it from the run's command line, "
                      "or delete it to compare against compiler.json only.") from None
  if not isinstance(blob, dict):
    raise ConfigError(f"{path}: expected a JSON object, got {type(blob).__name__}.")
  return blob


def write(workdir: str, config) -> None:
  """Writes WORKDIR/config.json atomically (what launch.validate reads back)."""
  atomic_write_text(os.path.join(workdir, CONFIG_FILE),
                    config.to_json_best_effort(indent=1) + "\n")


def _shapes(spec) -> dict:
  return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)),
                      jax.eval_shape(lambda: hypernet.init(jax.random.key(0), spec)))


def check_resume(workdir: str, config, spec, fingerprint: str,
                 allow: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
  """The intended changes of a resume; raises ConfigChangedError for any other change.

  Reads only. `allow` names dotted fields or sections ("train.lr", "data", "*" for all);
  a change that alters the compiler's parameter shapes or backbone cannot be allowed.
  """
  new = as_dict(config)
  defaults = field_defaults(config.get("stage", 1))
  unknown = [a for a in allow if a != ALL and not any(_matches(k, a) for k in
                                                       {**flatten(new), **defaults})]
  if unknown:
    raise ConfigError(f"allowed changes {unknown} name no config field; use dotted names "
                      "such as train.lr, train.warmup_steps, data.train.")
  old = read(workdir)
  changed = differences(old, new, defaults) if old is not None else {}
  spec_path = os.path.join(workdir, compiler_ckpt.SPEC_FILE)
  if os.path.isfile(spec_path):
    blob = compiler_ckpt.read_spec(spec_path)
    if blob.get("base_fingerprint") != fingerprint:
      raise ConfigChangedError(
          f"{workdir} was trained on base model {blob.get('base_fingerprint')} "
          f"({blob.get('base_model')}), this config builds {fingerprint}; use a new --workdir.")
    theirs = compiler_ckpt.spec_from_json(blob["spec"], spec.backbone)
    for k, old_new in compiler_ckpt.spec_differences(theirs, spec).items():
      changed.setdefault(f"compiler.{k}", old_new)
    if _shapes(theirs) != _shapes(spec):
      names = sorted(k for k in changed if k.startswith("compiler."))
      raise ConfigChangedError(
          f"{workdir}: the compiler's parameter shapes differ from the checkpoint's "
          f"(changed: {', '.join(names) or 'the spec'}); a run cannot continue with another "
          "shape. Use a new --workdir (with --config.init_from only for the same shapes).")
  refused = {}
  for k, (o, n) in sorted(changed.items()):
    if any(_matches(k, a) for a in ALWAYS_ALLOWED):
      continue
    if k == "train.steps" and isinstance(o, int) and isinstance(n, int) and n > o:
      continue
    if not any(_matches(k, a) for a in allow):
      refused[k] = (o, n)
  if refused:
    listed = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in refused.items())
    raise ConfigChangedError(
        f"{workdir} holds a run trained with another config ({listed}). Nothing was written. "
        "Use a new --workdir, or if continuing with these changes is intended, pass "
        f"--allow_changes={','.join(refused)}.")
  return changed


def record(workdir: str, config, changes: dict[str, tuple[Any, Any]], step: int) -> None:
  """Makes the new config the run's config; appends the changes (if any) to config_changes.jsonl."""
  if changes:
    path = os.path.join(workdir, CHANGES_FILE)
    previous = ""
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        previous = f.read()
      if previous and not previous.endswith("\n"):
        previous += "\n"
    line = json.dumps({"step": step, "changes": {k: {"from": o, "to": n} for k, (o, n) in
                                                 changes.items()}}, default=repr)
    atomic_write_text(path, previous + line + "\n")
  write(workdir, config)
