"""`SkillCompiler`: the user-facing compiler (backbone + spec + params), text in, adapters out.

    comp = lsj.SkillCompiler.pretrained(bb)   # or .load(ckpt_dir, backbone=bb), .create(bb, config)
    adapters = comp.compile(["skill text 1", "skill text 2"])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lskill_jax import sharding as shd
from lskill_jax.adapter.adapter import Adapter, base_fingerprint, text_hash, weighted_sum
from lskill_jax.backbone.loading import Backbone
from lskill_jax.backbone.model import TARGETS, lora_axes
from lskill_jax.compiler import checkpoint as ckpt
from lskill_jax.compiler import hypernet, latentskill_io, shipped
from lskill_jax.compiler.hypernet import CompilerSpec
from lskill_jax.data.documents import DocumentError, SkillDocument, parse_skill

OVERLONG = ("error", "truncate", "chunk")
_LENGTH_BUCKET = 64


def spec_from_config(config, backbone_config) -> CompilerSpec:
  """A CompilerSpec from a config (a full experiment config with `.compiler`, or that section)."""
  section = config.compiler if hasattr(config, "compiler") else config
  d = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  d["targets"] = tuple(d.get("targets", TARGETS))
  return CompilerSpec(backbone=backbone_config, **d)


@dataclasses.dataclass
class CompiledBatch:
  """Per-document results of `compile_documents`: an Adapter or the error that stopped it."""
  results: list[Adapter | DocumentError]

  @property
  def adapters(self) -> list[Adapter]:
    return [r for r in self.results if isinstance(r, Adapter)]

  @property
  def errors(self) -> list[DocumentError]:
    return [r for r in self.results if isinstance(r, DocumentError)]


class SkillCompiler:
  """A skill compiler bound to its backbone. `params` is the trainable pytree."""

  def __init__(self, backbone: Backbone, spec: CompilerSpec, params, checkpoint_id: str | None = None):
    if spec.backbone != backbone.config:
      raise ValueError("the compiler spec was built for another backbone config.")
    self.backbone = backbone
    self.spec = spec
    self.params = params
    self._checkpoint_id = checkpoint_id

  # ------------------------------------------------------------------ construction

  @classmethod
  def create(cls, backbone: Backbone, config, seed: int = 0) -> "SkillCompiler":
    """A freshly initialised compiler for `backbone` (config: ml_collections config or section)."""
    spec = spec_from_config(config, backbone.config)
    params = init_params(spec, seed, backbone.mesh)
    return cls(backbone, spec, params)

  @classmethod
  def load(cls, path: str, backbone: Backbone) -> "SkillCompiler":
    """A trained compiler from an Orbax checkpoint (see `compiler.checkpoint.find`)."""
    spec_path, params_dir = ckpt.find(path)
    blob = ckpt.read_spec(spec_path)
    fp = base_fingerprint(backbone.config)
    if blob.get("base_fingerprint") != fp:
      raise ckpt.CheckpointError(
          f"{path}: this compiler was trained for base model {blob.get('base_fingerprint')} "
          f"({blob.get('base_model')}) but the backbone given is {fp} ({backbone.source}).")
    spec = ckpt.spec_from_json(blob["spec"], backbone.config)
    abstract = jax.eval_shape(lambda: hypernet.init(jax.random.key(0), spec))
    shardings = param_shardings(spec, abstract, backbone.mesh)
    return cls(backbone, spec, shipped.load_params(params_dir, abstract, shardings))

  @classmethod
  def pretrained(cls, backbone: Backbone) -> "SkillCompiler":
    """The trained compiler that ships with the package for `backbone`'s weights.

    Raises `shipped.NoShippedCompilerError` (saying what to do instead) where none ships.
    """
    return cls.load(shipped.find_for(backbone), backbone)

  @classmethod
  def from_latentskill(cls, checkpoint_dir: str, backbone: Backbone, config,
                       context_len: int = latentskill_io.CONTEXT_LEN) -> "SkillCompiler":
    """A compiler from the LatentSkill authors' checkpoint directory and their YAML config
    (a path or a mapping); see `compiler.latentskill_io` for what converts and what is refused."""
    spec, params, _ = latentskill_io.read_checkpoint(checkpoint_dir, backbone.config, config,
                                                     context_len)
    shardings = param_shardings(spec, params, backbone.mesh)
    return cls(backbone, spec, jax.device_put(params, shardings))

  def save(self, path: str) -> None:
    """Writes compiler.json + params/ (Orbax) under `path` (`shipped.export` writes one file)."""
    ckpt.write_spec(path, self.spec, base_fingerprint(self.backbone.config), self.backbone.source)
    ckpt.save_params(os.path.join(path, "params"), self.params)
    self._checkpoint_id = None

  def export_latentskill(self, out_dir: str, global_step: int = 0) -> str:
    """Writes the compiler in the LatentSkill authors' checkpoint layout + their config YAML
    (refuses options their code cannot run, e.g. state_norm or another generator width)."""
    params = jax.tree.map(shd.to_host, self.params)
    return latentskill_io.write_checkpoint(self.spec, params, out_dir, model_path=self.backbone.source,
                                           global_step=global_step)

  @property
  def checkpoint_id(self) -> str:
    """Content hash of the spec and params: identifies the compiler in adapter caches.

    Params split across processes are gathered, so in a multi-process job every process
    must ask for it (compiling does, the first time)."""
    if self._checkpoint_id is None:
      h = hashlib.sha256(repr(ckpt.spec_to_json(self.spec)).encode())
      for leaf in jax.tree.leaves(self.params):
        h.update(shd.to_host(leaf).tobytes())
      self._checkpoint_id = h.hexdigest()[:16]
    return self._checkpoint_id

  # ------------------------------------------------------------------ compiling

  def tokenize(self, text: str) -> list[int]:
    tok = self.backbone.tokenizer
    if tok is None:
      raise ValueError("the backbone has no tokenizer; use compile_tokens with token ids.")
    return tok(text, add_special_tokens=False)["input_ids"]

  def compile_tokens(self, tokens: np.ndarray, mask: np.ndarray) -> Adapter:
    """Token ids [B, T] (left-padded, mask 1 on tokens) -> one per-row Adapter of batch B."""
    bb = self.backbone
    mesh = shd.mesh_or_default(bb.mesh)
    with jax.set_mesh(mesh):
      a, b = compile_factors(self.params, bb.params,
                             shd.put(np.asarray(tokens, np.int32), mesh, ("batch", None)),
                             shd.put(np.asarray(mask, np.int32), mesh, ("batch", None)),
                             spec=self.spec, replicate=mesh.is_multi_process)
    return Adapter.from_factors(a, b, self.spec.scale, base_fingerprint=base_fingerprint(bb.config),
                                producer="lskill_jax.compiler", compiler_id=self.checkpoint_id)

  def compile_ids(self, id_lists: Sequence[Sequence[int]], *, overlong: str = "truncate",
                  batch_size: int = 8) -> list[Adapter]:
    """One adapter per list of token ids. A list longer than spec.context_len keeps its first
    context_len ids ("truncate") or is compiled in consecutive chunks whose adapters are
    averaged ("chunk", exact by rank concatenation); "error" refuses it."""
    if overlong not in OVERLONG:
      raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    limit = self.spec.context_len
    pieces: list[tuple[int, list[int]]] = []  # (list index, ids of one chunk)
    for i, ids in enumerate(id_lists):
      ids = list(ids)
      if len(ids) > limit and overlong == "error":
        raise ValueError(f"token list {i}: {len(ids)} ids, over the compiler's context of "
                         f"{limit}; pass overlong='truncate' or 'chunk'.")
      chunks = ([ids[:limit]] if overlong == "truncate" else
                [ids[s:s + limit] for s in range(0, len(ids), limit)])
      pieces.extend((i, c) for c in chunks)
    per_list: dict[int, list[Adapter]] = {}
    for start in range(0, len(pieces), batch_size):
      batch = pieces[start:start + batch_size]
      tokens, mask = _left_pad([c for _, c in batch], batch_size)
      stacked = self.compile_tokens(tokens, mask)
      for j, (i, _) in enumerate(batch):
        per_list.setdefault(i, []).append(stacked.row(j))
    return [_average(ads) for _, ads in sorted(per_list.items())]

  def compile_documents(self, docs: Sequence[str | bytes | SkillDocument], *,
                        overlong: str = "error", batch_size: int = 8) -> CompiledBatch:
    """Compiles many documents; a bad document yields its DocumentError, the others compile.

    overlong: what to do with a document longer than spec.context_len tokens —
      "error" (default) refuses it; "truncate" keeps its first context_len tokens;
      "chunk" compiles consecutive context_len-token chunks and averages their adapters
      (exact, by rank concatenation: the rank grows with the number of chunks).
    The adapter's metadata records the treatment applied.
    """
    if overlong not in OVERLONG:
      raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    limit = self.spec.context_len
    results: list[Any] = [None] * len(docs)
    parsed: dict[int, tuple[SkillDocument, list[int]]] = {}  # doc index -> (document, token ids)
    for i, d in enumerate(docs):
      try:
        doc = d if isinstance(d, SkillDocument) else parse_skill(d, source=f"document {i}")
        ids = self.tokenize(doc.text)
        if len(ids) > limit and overlong == "error":
          raise DocumentError(
              f"{doc.source}: {len(ids)} tokens, over the compiler's context of {limit}; "
              "shorten it, or pass overlong='truncate' or 'chunk'.")
        parsed[i] = (doc, ids)
      except DocumentError as e:
        results[i] = e
    adapters = self.compile_ids([ids for _, ids in parsed.values()], overlong=overlong,
                                batch_size=batch_size)
    for (i, (doc, ids)), ad in zip(parsed.items(), adapters):
      n_tokens = len(ids)
      treatment = None
      if n_tokens > limit:
        treatment = (f"truncated to the first {limit} of {n_tokens} tokens" if overlong == "truncate"
                     else f"{-(-n_tokens // limit)} chunks of up to {limit} tokens, averaged")
      results[i] = dataclasses.replace(ad, meta=()).with_meta(
          **ad.metadata, source_hash=text_hash(doc.text), name=doc.name or None,
          source=doc.source, tokens=n_tokens, treatment=treatment)
    return CompiledBatch(results)

  def compile(self, texts: Sequence[str | bytes | SkillDocument], *, overlong: str = "error",
              batch_size: int = 8) -> list[Adapter]:
    """One adapter per skill text (raises DocumentError on the first unusable document)."""
    out = self.compile_documents(texts, overlong=overlong, batch_size=batch_size)
    if out.errors:
      raise out.errors[0]
    return out.results


# ----------------------------------------------------------------------------- helpers


@functools.partial(jax.jit, static_argnames=("spec", "replicate"))
def compile_factors(hparams, backbone_params, tokens, mask, *, spec, replicate=False):
  """`hypernet.compile_lora`, jitted: per-row factors a[t] [L, B, d_in, r], b[t] [L, B, r, d_out]
  sharded by their logical axes, or whole on every device when `replicate` (a mesh over several
  processes, each reading the adapters on its host)."""
  a, b = hypernet.compile_lora(hparams, backbone_params, tokens, mask, spec=spec)
  a_axes = {t: lora_axes(t, batched=True)[0] for t in spec.targets}
  b_axes = {t: lora_axes(t, batched=True)[1] for t in spec.targets}
  return shd.constrain_outputs((a, b), (a_axes, b_axes), replicate)


def _average(chunk_adapters: list[Adapter]) -> Adapter:
  """The mean of one document's chunk adapters, carrying the compiler's metadata (not a
  composition record: the chunks are one document)."""
  if len(chunk_adapters) == 1:
    return chunk_adapters[0]
  n = len(chunk_adapters)
  mean = weighted_sum(chunk_adapters, [1.0 / n] * n)
  return dataclasses.replace(mean, meta=()).with_meta(**chunk_adapters[0].metadata)


def _left_pad(seqs: list[list[int]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads to a bucketed length and a fixed batch (fewer recompiles); extra rows are empty."""
  T = -(-max(len(s) for s in seqs) // _LENGTH_BUCKET) * _LENGTH_BUCKET
  B = max(len(seqs), 1)
  B = min(batch_size, 1 << (B - 1).bit_length())
  tokens = np.zeros((B, T), np.int32)
  mask = np.zeros((B, T), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, T - len(s):] = s
    mask[i, T - len(s):] = 1
  return tokens, mask


def param_shardings(spec: CompilerSpec, abstract, mesh=None):
  """Shardings of the compiler params on `mesh` (default: `sharding.mesh_or_default`)."""
  return shd.tree_shardings(shd.mesh_or_default(mesh), hypernet.param_logical_axes(abstract),
                            abstract)


@functools.partial(jax.jit, static_argnames="spec")
def _init(key, spec: CompilerSpec):
  params = hypernet.init(key, spec)
  return shd.constrain_outputs(params, hypernet.param_logical_axes(params))


def init_params(spec: CompilerSpec, seed: int, mesh=None):
  """Initialised compiler params, created directly with their shardings on `mesh` (default:
  `sharding.mesh_or_default`)."""
  with jax.set_mesh(shd.mesh_or_default(mesh)):
    return _init(jax.random.key(seed), spec)
