"""The batched episode runner.

Every step, the prompts of all live episodes go through one generation call (greedy by
default), each with its own adapter row when adapters are mounted (`Adapter.stack`). When
an episode ends, its record goes to `on_finish` at once (the evaluation appends it to the
results file) and the free slot takes the next episode.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from lskill_jax.adapter import Adapter
from lskill_jax.agents.accounting import encode_prompt
from lskill_jax.agents.episodes import Episode
from lskill_jax.inference import generate_ids

# (prompt ids per row, adapter or None, alpha) -> generated ids per row (stop id excluded).
GenerateFn = Callable[[Sequence[Sequence[int]], object, float], list[list[int]]]
# Episode -> its adapter (latent mode), e.g. the compiled adapter of the episode's skill.
AdapterFn = Callable[[Episode], object]


def backbone_generate_fn(bb, max_new_tokens: int, temperature: float = 0.0,
                         seed: int = 0) -> GenerateFn:
  """Generation with `lsj.generate_ids` on a loaded backbone."""
  def generate(prompts, adapter, alpha):
    return generate_ids(bb, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        seed=seed, adapter=adapter, alpha=alpha)
  return generate


def fixed_shape_generate_fn(bb, max_new_tokens: int, rows: int, prompt_bucket: int,
                            temperature: float = 0.0, seed: int = 0) -> GenerateFn:
  """Greedy generation whose batches always have `rows` rows (a short batch is filled with
  copies of its first row, adapter included, and the copies' outputs dropped) and prompts a
  multiple of `prompt_bucket` tokens: as live episodes finish, or prompts grow, the shapes stay
  the same, so one compiled program serves a whole evaluation instead of one per shape."""
  def generate(prompts, adapter, alpha):
    n = len(prompts)
    if n > rows:
      raise ValueError(f"{n} prompts for a generate function of {rows} rows.")
    prompts = list(prompts) + [prompts[0]] * (rows - n)
    if adapter is not None and adapter.batched and n < rows:
      adapter = Adapter.stack([adapter.row(i) for i in range(n)] + [adapter.row(0)] * (rows - n))
    out = generate_ids(bb, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                       seed=seed, adapter=adapter, alpha=alpha, prompt_bucket=prompt_bucket)
    return out[:n]
  return generate


class StackedAdapters:
  """Per-row adapters for a batch, stacked once per distinct combination of skills."""

  def __init__(self, adapter_fn: AdapterFn, max_cached: int = 16):
    self.adapter_fn = adapter_fn
    self.max_cached = max_cached
    self._cache: dict[tuple, object] = {}

  def __call__(self, episodes: Sequence[Episode]):
    key = tuple(ep.skill for ep in episodes)
    if key not in self._cache:
      if len(self._cache) >= self.max_cached:
        self._cache.pop(next(iter(self._cache)))
      self._cache[key] = Adapter.stack([self.adapter_fn(ep) for ep in episodes])
    return self._cache[key]


def run_episodes(episodes: Iterable[Episode], *, tokenizer, generate_fn: GenerateFn,
                 batch_size: int = 8, adapter_fn: AdapterFn | None = None, alpha: float = 1.0,
                 on_finish: Callable[[dict], None] = lambda record: None,
                 progress=None) -> list[dict]:
  """Plays episodes in batches of up to `batch_size`; returns their records in finishing order.

  Each step sends every live episode's prompt through one `generate_fn` call. Errors of an
  episode's environment or prompt end that episode with its error recorded; errors of the
  generation itself end the run (they concern every episode).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
  stacked = StackedAdapters(adapter_fn) if adapter_fn is not None else None
  pending = iter(episodes)
  live: list[Episode] = []
  records: list[dict] = []

  def finish(ep: Episode) -> None:
    ep.close()
    record = ep.record()
    records.append(record)
    on_finish(record)
    if progress is not None:
      progress.update(1)

  exhausted = False
  try:
    while True:
      while not exhausted and len(live) < batch_size:
        ep = next(pending, None)
        if ep is None:
          exhausted = True
          break
        try:
          ep.start()
        except Exception as err:  # the environment could not start this episode
          ep.fail(err)
        if ep.done:
          finish(ep)
        else:
          live.append(ep)
      if not live:
        break

      batch, encoded = [], []
      for ep in live:
        try:
          prompt = ep.prompt()
          encoded.append(encode_prompt(tokenizer, prompt.messages, prompt.blocks))
          batch.append(ep)
        except Exception as err:
          ep.fail(err)
      if batch:
        adapter = stacked(batch) if stacked is not None else None
        outputs = generate_fn([e.ids for e in encoded], adapter, alpha)
        for ep, enc, out in zip(batch, encoded, outputs):
          ep.account(enc, len(out))
          try:
            ep.act(tokenizer.decode(out, skip_special_tokens=True))
          except Exception as err:  # the environment failed on this step
            ep.fail(err)
      for ep in [ep for ep in live if ep.done]:
        finish(ep)
      live = [ep for ep in live if not ep.done]
  finally:  # a failed generation must not leave engines running
    for ep in live:
      ep.close()
  return records
