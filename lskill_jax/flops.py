"""Matrix-product FLOPs of a JAX function, counted from its jaxpr (for rooflines and MFU).

    n = flops.dot_flops(jax.make_jaxpr(fn)(*args))

Counts 2·M·N·K per `dot_general` (batch dimensions multiply in), which is what
`torch.utils.flop_counter` counts for PyTorch's matrix products and attention, so the two
sides' figures compare. Element-wise work (norms, activations, softmax) is not counted: on the
shapes here it is a few percent of the products. Loops multiply their body by their trip
count; a `while` loop's is unknown, so it is refused.
"""

from __future__ import annotations

import math

import jax
from jax.extend import core


def _dot(eqn) -> int:
  (contract, _), _ = eqn.params["dimension_numbers"]  # ((lhs, rhs) contracting, batch)
  lhs = eqn.invars[0].aval.shape
  k = math.prod(lhs[d] for d in contract)
  return 2 * k * math.prod(eqn.outvars[0].aval.shape)


def dot_flops(jaxpr) -> int:
  """Matrix-product FLOPs of a (closed) jaxpr, sub-computations and loops included."""
  jaxpr = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot(eqn)
      continue
    if name == "while":
      raise ValueError("dot_flops: a while loop's trip count is unknown; count a function "
                       "without one (use lax.scan or a Python loop).")
    if name == "cond":  # one branch runs: count the dearest
      total += max(dot_flops(b) for b in eqn.params["branches"])
      continue
    times = eqn.params["length"] if name == "scan" else 1
    for sub in core.jaxprs_in_params(eqn.params):
      total += times * dot_flops(sub)
  return total


def function_flops(fn, *args, **kwargs) -> int:
  """dot_flops of fn(*args, **kwargs) traced abstractly (nothing runs)."""
  return dot_flops(jax.make_jaxpr(fn)(*args, **kwargs))
