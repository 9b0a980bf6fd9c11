"""The package's import graph: layered (no package imports one above it), acyclic, and every
project import at module top. Read from the source with `ast`, so nothing is imported."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lskill_jax")

# Rank of each room (docs/architecture.md): a module may import its own room and lower ranks.
RANKS = {
    "io": 0, "sharding": 0, "flops": 0,
    "weights": 1,
    "backbone": 2,
    "data": 3, "envs": 3,
    "adapter": 4, "inference": 4,
    "compiler": 5, "experiment": 5,
    "agents": 6,
    "training": 7,
    "reproduce": 8,
}


def _modules() -> dict[str, str]:
  """Dotted module name -> file, for every module of the package."""
  mods = {}
  for d, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(d, f)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        mods[rel.removesuffix(".__init__")] = path
  return mods


def _project_imports(mods: dict[str, str]):
  """Yields (module, imported module, at module top) for imports of project modules."""
  for name, path in mods.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                   for a in node.names]
      else:
        continue
      for t in targets:
        if t in mods and t != name:
          yield name, t, id(node) in top


def _room(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


@pytest.fixture(scope="module")
def graph():
  mods = _modules()
  return mods, list(_project_imports(mods))


def test_every_room_has_a_rank(graph):
  mods, _ = graph
  rooms = {_room(m) for m in mods} - {None}
  assert rooms <= set(RANKS), f"rooms without a rank in RANKS: {sorted(rooms - set(RANKS))}"


def test_no_room_imports_a_room_above_it(graph):
  _, edges = graph
  upward = [(a, b) for a, b, _ in edges
            if _room(a) is not None and (_room(b) is None or RANKS[_room(b)] > RANKS[_room(a)])]
  assert not upward, f"imports of a higher room (or of the package itself): {upward}"


def test_project_imports_are_at_module_top(graph):
  _, edges = graph
  inner = [(a, b) for a, b, top in edges if not top]
  assert not inner, f"project imports inside functions: {inner}"


def test_module_graph_has_no_cycle(graph):
  mods, edges = graph
  out = {m: set() for m in mods}
  for a, b, _ in edges:
    out[a].add(b)
  state = {}

  def visit(m, stack):
    state[m] = "open"
    for n in out[m]:
      assert state.get(n) != "open", f"import cycle: {stack[stack.index(n):] + [m, n]}"
      if n not in state:
        visit(n, stack + [m])
    state[m] = "done"

  for m in mods:
    if m not in state:
      visit(m, [])
