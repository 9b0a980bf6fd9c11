"""Generate ALFWorld-format games offline, for all six ALFWorld task types.

ALFWorld's official games are a download. What ships in the `alfworld` package is enough
to build new ones that its own `AlfredTWEnv` plays unchanged:

* the PDDL domain (`alfworld/data/alfred.pddl`) and the text grammar
  (`alfworld/data/alfred.twl2`);
* per floor plan (120 AI2-THOR scenes, `alfworld/gen/layouts/`): the static receptacles
  with the pose the agent interacts with them from (`FloorPlanN-openable.json`), the
  object types present (`FloorPlanN-objects.json`) and the navigable grid points
  (`FloorPlanN-layout.npy`);
* which object fits in which receptacle, which objects can be heated, cooled, cleaned or
  toggled (`alfworld.gen.constants`), and the PDDL goal and goal sentence of each task
  type (`alfworld.gen.goal_library`).

A game is one PDDL problem: the receptacles of a floor plan, objects of the types that
scene holds scattered over the receptacles they fit in, the agent at a free navigable
point, and the goal of one task. Each game gets a cheapest plan under the domain's action
costs, built from the known world state (fast-downward, which TextWorld ships, can plan
these games too, but its search takes minutes on kitchen-sized ones). The plan is replayed
in TextWorld's PDDL engine, the one AlfredTWEnv plays with, and only games it wins are
written, with the plan stored as their walkthrough.

Output follows the official layout, which `AlfredTWEnv` walks::

    <root>/json_2.1.1/<split>/<task>-<Obj>-None-<Recep|Lamp>-<scene>/trial_<id>/
        game.tw-pddl     JSON: pddl_domain, grammar (with the goal sentence),
                         pddl_problem, solvable, walkthrough
        traj_data.json   task_type, pddl_params, scene, turk_annotations, plan

Splits: `train` and `valid_seen` use the 96 floor plans ALFRED trains on;
`valid_unseen` uses the 24 it holds out (`alfworld.gen.constants.TEST_SCENE_NUMBERS`),
and only (object, receptacle-or-lamp) pairs that train and valid_seen never use. Output
is a function of the seed alone: the same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import random
import shutil
from typing import Iterable, Iterator, Mapping, Sequence

from lskill_jax.envs.alfworld.engine import game_engine
from lskill_jax.io import atomic_write_text

TASK_TYPES = (
  "pick_and_place_simple",
  "look_at_obj_in_light",
  "pick_clean_then_place_in_recep",
  "pick_heat_then_place_in_recep",
  "pick_cool_then_place_in_recep",
  "pick_two_obj_and_place",
)
# Short names the paper's tables use.
TASK_SHORT_NAMES = {
  "pick_and_place_simple": "Pick",
  "look_at_obj_in_light": "Look",
  "pick_clean_then_place_in_recep": "Clean",
  "pick_heat_then_place_in_recep": "Heat",
  "pick_cool_then_place_in_recep": "Cool",
  "pick_two_obj_and_place": "Pick2",
}
SPLITS = ("train", "valid_seen", "valid_unseen")
DATA_DIRNAME = "json_2.1.1"

# Version of the generation recipe, stored in every traj_data.json: bump it when a change
# makes the same seed give different games.
GENERATOR_VERSION = 1

_LAMPS = ("DeskLamp", "FloorLamp")
# Furniture a lamp stands on (no lamp fits anywhere in ALFRED's receptacle table, but the
# toggle action needs the lamp in a receptacle the agent can walk to).
_LAMP_STANDS = ("SideTable", "Desk", "Dresser", "Shelf", "CoffeeTable", "TVStand", "DiningTable")
# Room types each task is generated in (alfworld.gen.constants.GOALS_VALID).
_SCENE_RANGES = {"Kitchen": (1, 30), "LivingRoom": (201, 230), "Bedroom": (301, 330),
                 "Bathroom": (401, 430)}
# How many instances of a receptacle type a scene gets when the layout files list the
# type among the scene's objects but give no interaction pose for it.
_SYNTHESIZED_COUNTS = {"StoveBurner": 4}
# Object heights above the floor for synthesized receptacles (only used to build
# THOR-looking object ids).
_SYNTHESIZED_HEIGHTS = {"StoveBurner": 0.92, "CoffeeMachine": 0.9, "Toaster": 0.9,
                        "GarbageCan": 0.0}
_PLACEMENT_COMBO_BUCKETS = 5  # one bucket in five of (object, target) pairs is unseen-only


# ---------------------------------------------------------------------------------------
# What ships in the alfworld package.
# ---------------------------------------------------------------------------------------

def _alfworld_modules():
  """Import the parts of alfworld the generator reads, with a clear error if missing."""
  try:
    import alfworld.gen.constants as constants
    import alfworld.gen.goal_library as goal_library
    import alfworld.info as info
  except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "Generating ALFWorld games needs the `alfworld` package (with TextWorld and "
        "fast-downward). Install it with `pip install alfworld==0.4.2`.") from err
  return constants, goal_library, info


def layouts_dir() -> str:
  """Folder of the per-floor-plan layout files that ship inside `alfworld`."""
  constants, _, _ = _alfworld_modules()
  return os.path.join(os.path.dirname(constants.__file__), "layouts")


def game_logic() -> dict:
  """The PDDL domain and the TextWorld grammar text that ship with alfworld."""
  _, _, info = _alfworld_modules()
  with open(info.ALFRED_PDDL_PATH) as f:
    domain = f.read()
  with open(info.ALFRED_TWL2_PATH) as f:
    grammar = f.read()
  return {"pddl_domain": domain, "grammar": grammar}


def room_type(scene_num: int) -> str:
  """Room type (Kitchen, LivingRoom, Bedroom, Bathroom) of an AI2-THOR floor plan."""
  for name, (lo, hi) in _SCENE_RANGES.items():
    if lo <= scene_num <= hi:
      return name
  raise ValueError(f"FloorPlan{scene_num} is not an ALFRED floor plan.")


def split_scenes(split: str) -> tuple[int, ...]:
  """Floor plans a split draws its games from (unseen ones are ALFRED's held-out set)."""
  constants, _, _ = _alfworld_modules()
  if split in ("train", "valid_seen"):
    return tuple(sorted(constants.TRAIN_SCENE_NUMBERS))
  if split == "valid_unseen":
    return tuple(sorted(constants.TEST_SCENE_NUMBERS))
  raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")


def is_unseen_pair(object_type: str, target_type: str) -> bool:
  """Whether an (object, receptacle-or-lamp) pair is reserved for valid_unseen.

  A fixed hash, independent of the seed, so the reservation also holds between
  splits generated with different seeds.
  """
  digest = hashlib.sha256(f"{object_type}|{target_type}".encode()).digest()
  return int.from_bytes(digest[:8], "big") % _PLACEMENT_COMBO_BUCKETS == 0


# ---------------------------------------------------------------------------------------
# Scenes.
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Receptacle:
  """A static receptacle: THOR-style object id, type and the pose it is used from."""
  object_id: str
  rtype: str
  location: tuple[int, int, int, int]  # (x, z) in 0.25 m grid steps, rotation/90, horizon


@dataclasses.dataclass(frozen=True)
class Scene:
  """What a floor plan offers: receptacles, placeable object types, navigable points."""
  number: int
  room: str
  receptacles: tuple[Receptacle, ...]
  object_types: tuple[str, ...]  # placeable types present in the scene, lamps included
  nav_points: tuple[tuple[int, int], ...]  # navigable grid points

  @property
  def receptacle_types(self) -> tuple[str, ...]:
    return tuple(sorted({r.rtype for r in self.receptacles}))

  def receptacles_of(self, rtype: str) -> list[Receptacle]:
    return [r for r in self.receptacles if r.rtype == rtype]


def _receptacle_type(object_id: str) -> str:
  # Sinks and bathtubs hold things in their basin: 'Sink|x|y|z|SinkBasin'.
  parts = object_id.split("|")
  return parts[4] if len(parts) > 4 else parts[0]


def _fmt_coord(value: float) -> str:
  """THOR's coordinate format in object ids: '+01.25', '-00.50', '00.00'."""
  text = f"{abs(value):05.2f}"
  if round(value, 2) == 0:
    return text
  return ("+" if value > 0 else "-") + text


def _thor_id(otype: str, x: float, y: float, z: float, suffix: str = "") -> str:
  object_id = f"{otype}|{_fmt_coord(x)}|{_fmt_coord(y)}|{_fmt_coord(z)}"
  return object_id + (f"|{suffix}" if suffix else "")


def _id_coords(object_id: str) -> tuple[float, float, float]:
  parts = object_id.split("|")
  return float(parts[1]), float(parts[2]), float(parts[3])


def load_scene(scene_num: int) -> Scene:
  """Build a floor plan's receptacles and object types from alfworld's layout files.

  Receptacles with a precomputed interaction pose come from `-openable.json`. Receptacle
  types the scene holds (`-objects.json`) but that have no pose there (stove burners,
  coffee machines, toasters, most garbage cans...) are placed at navigable points chosen
  by a generator seeded with the floor plan number, so a floor plan is the same room in
  every game and every seed.
  """
  constants, _, _ = _alfworld_modules()
  import numpy as np  # layout points ship as .npy (plain float arrays, no pickle)

  base = os.path.join(layouts_dir(), f"FloorPlan{scene_num}")
  try:
    with open(base + "-openable.json") as f:
      poses = json.load(f)
    with open(base + "-objects.json") as f:
      present = set(json.load(f))
    points = np.load(base + "-layout.npy", allow_pickle=False)
  except FileNotFoundError as err:
    raise FileNotFoundError(
        f"Layout files for FloorPlan{scene_num} are missing from the installed alfworld "
        f"package ({err.filename}). Reinstall it with `pip install alfworld==0.4.2`.") from err

  static_types = set(constants.VAL_RECEPTACLE_OBJECTS) - constants.MOVABLE_RECEPTACLES_SET
  step = constants.AGENT_STEP_SIZE
  receptacles = []
  for object_id in sorted(poses):
    rtype = _receptacle_type(object_id)
    if rtype not in static_types:
      continue
    x, z, rotation, horizon = poses[object_id]
    loc = (int(round(x / step)), int(round(z / step)), int(rotation) // 90 % 4, int(horizon))
    receptacles.append(Receptacle(object_id, rtype, loc))

  nav = tuple(sorted({(int(round(px / step)), int(round(pz / step))) for px, pz in points}))
  rng = random.Random(f"alfworld-scene-{scene_num}")
  have = {r.rtype for r in receptacles}
  # objects.json lists a sink as 'Sink' and 'SinkBasin'; the basin is the receptacle.
  for rtype in sorted((present & static_types) - have):
    for _ in range(_SYNTHESIZED_COUNTS.get(rtype, 1)):
      px, pz = rng.choice(nav)
      rotation = rng.randrange(4)
      dx, dz = [(0, 1), (1, 0), (0, -1), (-1, 0)][rotation]  # THOR: 0 deg faces +z
      y = _SYNTHESIZED_HEIGHTS.get(rtype, 0.5)
      cx, cz = (px + 2 * dx) * step + rng.uniform(-0.2, 0.2), (pz + 2 * dz) * step
      if rtype in ("SinkBasin", "BathtubBasin"):
        object_id = _thor_id(rtype[:-5], cx, y, cz, suffix=rtype)
      else:
        object_id = _thor_id(rtype, cx, y, cz)
      horizon = 60 if y < 0.6 else 30
      receptacles.append(Receptacle(object_id, rtype, (px, pz, rotation, horizon)))

  types_here = {r.rtype for r in receptacles}
  placeable = sorted(
      otype for otype in present
      if otype not in static_types and otype in constants.OBJECTS_SET
      and any(otype in constants.VAL_RECEPTACLE_OBJECTS[r] for r in types_here))
  lamps = sorted(t for t in _LAMPS if t in present and types_here & set(_LAMP_STANDS))
  return Scene(scene_num, room_type(scene_num), tuple(sorted(receptacles, key=lambda r: r.object_id)),
               tuple(sorted(placeable + lamps)), nav)


@functools.lru_cache(maxsize=None)
def get_scene(scene_num: int) -> Scene:
  """`load_scene`, cached (scenes are immutable)."""
  return load_scene(scene_num)


# ---------------------------------------------------------------------------------------
# Tasks.
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task in one floor plan, in ALFRED's `pddl_params` terms."""
  task_type: str
  scene: int
  object_target: str
  parent_target: str = ""  # receptacle type to put the object in ('' for Look)
  toggle_target: str = ""  # lamp type (Look only)

  @property
  def target(self) -> str:
    return self.toggle_target or self.parent_target

  @property
  def dirname(self) -> str:
    """Official task folder name: '<task>-<Obj>-<MovableRecep>-<Recep|Lamp>-<scene>'."""
    return f"{self.task_type}-{self.object_target}-None-{self.target}-{self.scene}"


def _can_contain(rtype: str, otype: str) -> bool:
  constants, _, _ = _alfworld_modules()
  return otype in constants.VAL_RECEPTACLE_OBJECTS.get(rtype, ())


def _task_ok_in_room(task_type: str, room: str) -> bool:
  constants, _, _ = _alfworld_modules()
  return room in constants.GOALS_VALID[task_type]


def candidate_tasks(scene: Scene, task_type: str) -> list[TaskSpec]:
  """Every task of a type that can be set up in a scene, in a fixed order.

  Rules follow ALFRED's: heating needs a microwave, cooling a fridge, cleaning a sink
  basin (the only receptacle the domain lets clean); the object must fit the goal
  receptacle and also some other receptacle, so the goal is not met at the start.
  """
  constants, _, _ = _alfworld_modules()
  if not _task_ok_in_room(task_type, scene.room):
    return []
  rtypes = scene.receptacle_types
  objects = [o for o in scene.object_types if o not in _LAMPS]
  if task_type == "look_at_obj_in_light":
    lamps = [t for t in scene.object_types if t in _LAMPS]
    return [TaskSpec(task_type, scene.number, o, toggle_target=lamp)
            for lamp in lamps for o in objects]

  needs = {"pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
           "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
           "pick_cool_then_place_in_recep": ("Fridge", "Coolable")}
  excluded_parents = set()
  if task_type in needs:
    appliance, ability = needs[task_type]
    if appliance not in rtypes:
      return []
    objects = [o for o in objects if o in constants.VAL_ACTION_OBJECTS[ability]]
    excluded_parents = {appliance}
  tasks = []
  for obj in objects:
    for parent in rtypes:
      if parent in excluded_parents or not _can_contain(parent, obj):
        continue
      if not any(_can_contain(r, obj) for r in rtypes if r != parent):
        continue  # every instance would start inside the goal receptacle
      tasks.append(TaskSpec(task_type, scene.number, obj, parent_target=parent))
  return tasks


def split_candidates(split: str, task_type: str) -> list[TaskSpec]:
  """Tasks of a type a split may draw: its floor plans, its (object, target) pairs."""
  unseen = split == "valid_unseen"
  out = []
  for scene_num in split_scenes(split):
    for task in candidate_tasks(get_scene(scene_num), task_type):
      if is_unseen_pair(task.object_target, task.target) == unseen:
        out.append(task)
  return out


def task_description(task: TaskSpec, rng: random.Random) -> str:
  """The goal sentence from alfworld's own templates ('put a clean mug in coffeemachine')."""
  _, goal_library, _ = _alfworld_modules()
  template = rng.choice(goal_library.gdict[task.task_type]["templates"])
  return template.format(obj=task.object_target.lower(), recep=task.parent_target.lower(),
                         toggle=task.toggle_target.lower(), mrecep="")


# ---------------------------------------------------------------------------------------
# PDDL problem.
# ---------------------------------------------------------------------------------------

def pddl_name(text: str) -> str:
  """Escape a THOR id into a PDDL name, as ALFRED does ('|' -> '_bar_', '-' -> '_minus_')."""
  table = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}
  return "".join(table.get(ch, ch) for ch in text)


def _loc_name(loc: Sequence[int]) -> str:
  return pddl_name("loc|%d|%d|%d|%d" % tuple(loc))


@dataclasses.dataclass
class Placement:
  """The objects of one game: id -> (type, receptacle it starts in)."""
  objects: dict[str, tuple[str, Receptacle]]
  agent_location: tuple[int, int, int, int]


def _instance_count(otype: str, task: TaskSpec, rng: random.Random) -> int:
  if otype in _LAMPS:
    return 1
  if otype == task.object_target:
    return rng.randint(2, 3) if task.task_type == "pick_two_obj_and_place" else rng.randint(1, 3)
  return rng.choices((1, 2, 3), weights=(6, 3, 1))[0]


def place_objects(scene: Scene, task: TaskSpec, rng: random.Random) -> Placement:
  """Scatter instances of the scene's object types over receptacles they fit in.

  Instances of the target type never start in a receptacle of the goal type, so a game
  is never won before the first action. The agent starts at a navigable point that is no
  receptacle's pose, so the first observation is the usual 'middle of a room'.
  """
  used_ids: set[str] = set()
  objects: dict[str, tuple[str, Receptacle]] = {}
  for otype in scene.object_types:
    if otype in _LAMPS:
      if otype != task.toggle_target and rng.random() < 0.5:
        continue  # lamps that are no goal appear in some games only
      options = [r for r in scene.receptacles if r.rtype in _LAMP_STANDS]
    else:
      options = [r for r in scene.receptacles if _can_contain(r.rtype, otype)]
      if otype == task.object_target:
        options = [r for r in options if r.rtype != task.parent_target]
    for _ in range(_instance_count(otype, task, rng)):
      recep = rng.choice(options)
      rx, ry, rz = _id_coords(recep.object_id)
      while True:
        object_id = _thor_id(otype, rx + rng.uniform(-0.3, 0.3),
                             ry + rng.uniform(0.0, 0.1), rz + rng.uniform(-0.3, 0.3))
        if object_id not in used_ids:
          break
      used_ids.add(object_id)
      objects[object_id] = (otype, recep)

  taken = {r.location for r in scene.receptacles}
  while True:
    px, pz = rng.choice(scene.nav_points)
    agent = (px, pz, rng.randrange(4), 30)
    if agent not in taken:
      break
  return Placement(objects, agent)


def build_problem(scene: Scene, task: TaskSpec, placement: Placement, name: str) -> str:
  """The PDDL problem text of a game, in the shape of ALFWorld's `initial_state.pddl`."""
  constants, goal_library, _ = _alfworld_modules()
  static_types = set(constants.VAL_RECEPTACLE_OBJECTS) - constants.MOVABLE_RECEPTACLES_SET
  # Declare every type name, as ALFRED does: the domain's actions refer to some by name
  # (SinkBasinType, MicrowaveType, FridgeType, KnifeType) whether or not a scene has them.
  rtypes = sorted((constants.RECEPTACLES - constants.MOVABLE_RECEPTACLES_SET) | static_types)
  otypes = sorted(constants.OBJECTS_SET - set(rtypes))
  objects = sorted(placement.objects)
  receptacles = list(scene.receptacles)
  locations = sorted({r.location for r in receptacles} | {placement.agent_location})

  decl = ["agent1 - agent"]
  decl += [f"{t}Type - otype" for t in otypes]
  decl += [f"{t}Type - rtype" for t in rtypes]
  decl += [f"{pddl_name(o)} - object" for o in objects]
  decl += [f"{pddl_name(r.object_id)} - receptacle" for r in receptacles]
  decl += [f"{_loc_name(loc)} - location" for loc in locations]

  actions = constants.VAL_ACTION_OBJECTS
  init = ["(= (total-cost) 0)"]
  for r in receptacles:
    rid = pddl_name(r.object_id)
    init.append(f"(receptacleType {rid} {r.rtype}Type)")
    init.append(f"(receptacleAtLocation {rid} {_loc_name(r.location)})")
    if r.rtype in constants.OPENABLE_CLASS_SET:
      init.append(f"(openable {rid})")
  init.append(f"(atLocation agent1 {_loc_name(placement.agent_location)})")
  for object_id in objects:
    otype, recep = placement.objects[object_id]
    oid = pddl_name(object_id)
    init.append(f"(objectType {oid} {otype}Type)")
    init.append(f"(inReceptacle {oid} {pddl_name(recep.object_id)})")
    init.append(f"(objectAtLocation {oid} {_loc_name(recep.location)})")
    if otype in _LAMPS:
      init.append(f"(toggleable {oid})")
      continue
    init.append(f"(pickupable {oid})")
    if otype in constants.MOVABLE_RECEPTACLES_SET:
      init.append(f"(isReceptacleObject {oid})")
    for ability, predicate in (("Cleanable", "cleanable"), ("Heatable", "heatable"),
                               ("Coolable", "coolable"), ("Sliceable", "sliceable")):
      if otype in actions[ability]:
        init.append(f"({predicate} {oid})")
  present_otypes = sorted({t for t, _ in placement.objects.values()})
  for rtype in scene.receptacle_types:
    for otype in present_otypes:
      if _can_contain(rtype, otype):
        init.append(f"(canContain {rtype}Type {otype}Type)")

  goal = goal_library.gdict[task.task_type]["pddl"].format(
      obj=task.object_target, recep=task.parent_target, toggle=task.toggle_target, mrecep="")
  # The library writes types as '?r # receptacle' and ends its goal with the ')' that
  # closes the whole problem; the metric must come between the two.
  goal = goal.replace("#", "-").strip()
  if not (goal.startswith("(:goal") and goal.endswith(")")):
    raise RuntimeError(f"Unexpected goal format in alfworld.gen.goal_library for {task.task_type}; "
                       "this generator expects alfworld==0.4.2.")
  goal = goal[:-1].rstrip()
  pad = "\n        "
  return (f"(define (problem {name})\n"
          f"    (:domain alfred)\n"
          f"    (:objects{pad}{pad.join(decl)}\n    )\n"
          f"    (:init{pad}{pad.join(init)}\n    )\n"
          f"    {goal}\n"
          f"    (:metric minimize (total-cost))\n"
          f")\n")


# ---------------------------------------------------------------------------------------
# Solving while generating.
# ---------------------------------------------------------------------------------------

# Action costs of the shipped domain (alfred.pddl): moving, opening, taking and putting
# cost 1; heating, cooling, cleaning and toggling cost 5.
_APPLIANCE = {"pick_clean_then_place_in_recep": ("SinkBasin", "clean"),
              "pick_heat_then_place_in_recep": ("Microwave", "heat"),
              "pick_cool_then_place_in_recep": ("Fridge", "cool")}


class _PlanBuilder:
  """Accumulates a plan as (verb, object id, receptacle id) steps and its cost."""

  def __init__(self, start: tuple[int, int, int, int]):
    self.location = start
    self.opened: set[str] = set()
    self.steps: list[tuple[str, str, str]] = []
    self.cost = 0

  def goto(self, r: Receptacle) -> None:
    # Receptacles that share a pose are all in reach from it: no move needed.
    if self.location != r.location:
      self.steps.append(("go", "", r.object_id))
      self.cost += 1
      self.location = r.location

  def open(self, r: Receptacle) -> None:
    if r.rtype in _openable_types() and r.object_id not in self.opened:
      self.steps.append(("open", "", r.object_id))
      self.opened.add(r.object_id)
      self.cost += 1

  def take(self, object_id: str, r: Receptacle) -> None:
    self.goto(r)
    self.open(r)
    self.steps.append(("take", object_id, r.object_id))
    self.cost += 1

  def put(self, object_id: str, r: Receptacle) -> None:
    self.goto(r)
    self.open(r)
    self.steps.append(("move", object_id, r.object_id))
    self.cost += 1

  def apply(self, verb: str, object_id: str, r: Receptacle) -> None:
    self.goto(r)  # heating, cooling, cleaning and toggling need no opening
    self.steps.append((verb, object_id, r.object_id))
    self.cost += 5


def _openable_types() -> frozenset:
  constants, _, _ = _alfworld_modules()
  return frozenset(constants.OPENABLE_CLASS_SET)


def oracle_plan(scene: Scene, task: TaskSpec, placement: Placement) -> list[tuple[str, str, str]]:
  """A cheapest plan under the domain's action costs, built from the known world state.

  Steps are (verb, object id, receptacle id). fast-downward can plan these games too,
  but on kitchen-sized problems its search takes minutes per game; the tasks are simple
  enough that trying every choice of instances is exact and instant. The plan is then
  replayed in the real engine (`GameChecker`), which is what certifies the game.
  """
  targets = sorted(o for o, (t, _) in placement.objects.items() if t == task.object_target)
  where = {o: placement.objects[o][1] for o in targets}
  best: _PlanBuilder | None = None

  def consider(plan: _PlanBuilder) -> None:
    nonlocal best
    if best is None or plan.cost < best.cost:  # first found wins ties: fixed order
      best = plan

  if task.task_type == "look_at_obj_in_light":
    lamps = sorted(o for o, (t, _) in placement.objects.items() if t == task.toggle_target)
    for o in targets:
      for lamp in lamps:
        plan = _PlanBuilder(placement.agent_location)
        plan.take(o, where[o])
        plan.apply("use", lamp, placement.objects[lamp][1])
        consider(plan)
  elif task.task_type == "pick_two_obj_and_place":
    for o1 in targets:
      for o2 in targets:
        if o1 == o2:
          continue
        for parent in scene.receptacles_of(task.parent_target):
          plan = _PlanBuilder(placement.agent_location)
          plan.take(o1, where[o1])
          plan.put(o1, parent)
          plan.take(o2, where[o2])
          plan.put(o2, parent)
          consider(plan)
  else:
    appliances = [None]
    if task.task_type in _APPLIANCE:
      appliances = scene.receptacles_of(_APPLIANCE[task.task_type][0])
    for o in targets:
      for appliance in appliances:
        for parent in scene.receptacles_of(task.parent_target):
          plan = _PlanBuilder(placement.agent_location)
          plan.take(o, where[o])
          if appliance is not None:
            plan.apply(_APPLIANCE[task.task_type][1], o, appliance)
          plan.put(o, parent)
          consider(plan)
  if best is None:
    raise ValueError(f"No plan for {task}: the placement lacks the objects it needs.")
  return best.steps


_TEMPLATES = {"go": "go to {r}", "open": "open {r}", "take": "take {o} from {r}",
              "move": "move {o} to {r}", "heat": "heat {o} with {r}", "cool": "cool {o} with {r}",
              "clean": "clean {o} with {r}", "use": "use {o}"}


class GameChecker:
  """Replays plans in TextWorld's PDDL engine, with object names as AlfredTWEnv shows them.

  Holds one copy of fast-downward's library (loaded per instance); reuse it across games.
  """

  def __init__(self):
    self._env = game_engine()

  def play(self, gamedata: Mapping, steps: Sequence[tuple[str, str, str]]) -> tuple[list[str], bool]:
    """Turn id-level steps into commands, play them; return (commands, won at the end).

    A game counts only if it is not won at the start, every command is admissible when
    played, and the last one wins.
    """
    self._env.load(dict(gamedata))
    # The engine lower-cases PDDL names (fast-downward does); map them to display names.
    names = {key: info.name.strip() for key, info in self._env._entity_infos.items()}
    commands = [_TEMPLATES[verb].format(o=names.get(pddl_name(o).lower(), "?"),
                                        r=names.get(pddl_name(r).lower(), "?"))
                for verb, o, r in steps]
    state = self._env.reset()
    if state["won"]:
      return commands, False
    for command in commands:
      if command not in state["admissible_commands"]:
        return commands, False
      state, _, _ = self._env.step(command)
    return commands, bool(commands) and bool(state["won"])


# ---------------------------------------------------------------------------------------
# Writing games.
# ---------------------------------------------------------------------------------------

def _dumps(obj) -> str:
  return json.dumps(obj, indent=1, sort_keys=True) + "\n"


@dataclasses.dataclass(frozen=True)
class GeneratedGame:
  """Where a generated game lives and what it is."""
  split: str
  index: int
  task: TaskSpec
  game_dir: str
  walkthrough: tuple[str, ...]

  @property
  def game_file(self) -> str:
    return os.path.join(self.game_dir, "game.tw-pddl")


@functools.lru_cache(maxsize=None)
def _logic() -> dict:
  return game_logic()


@functools.lru_cache(maxsize=None)
def _pool(split: str, task_type: str) -> tuple[TaskSpec, ...]:
  pool = tuple(split_candidates(split, task_type))
  if not pool:
    raise RuntimeError(f"No {task_type} task can be set up for split {split}.")
  return pool


def make_game(split: str, index: int, seed: int, task_type: str,
              checker: GameChecker, max_attempts: int = 20) -> tuple[TaskSpec, str, dict, dict]:
  """Sample, build and check game number `index` of a split; return (task, trial, files).

  Each game has its own random stream (seed, split, index, attempt), so a game does not
  depend on the others (games can be made in any order, in parallel) and a failed
  attempt is simply redrawn.
  """
  candidates = _pool(split, task_type)
  scenes = sorted({t.scene for t in candidates})
  for attempt in range(max_attempts):
    rng = random.Random(f"lskill-alfworld:{seed}:{split}:{index}:{attempt}")
    # A floor plan first, then a task in it: small rooms count as much as kitchens.
    scene_num = rng.choice(scenes)
    task = rng.choice([t for t in candidates if t.scene == scene_num])
    scene = get_scene(scene_num)
    placement = place_objects(scene, task, rng)
    trial = f"trial_S{seed:06d}_{SPLITS.index(split)}{index:06d}"
    problem = build_problem(scene, task, placement, name=f"plan_{trial}")
    description = task_description(task, rng)
    logic = _logic()
    gamedata = {"pddl_domain": logic["pddl_domain"],
                "grammar": logic["grammar"].replace("UNKNOWN GOAL", description),
                "pddl_problem": problem, "solvable": None, "walkthrough": None}
    plan, won = checker.play(gamedata, oracle_plan(scene, task, placement))
    if not won:
      continue
    gamedata.update(solvable=True, walkthrough=plan)
    traj = {
        "task_id": trial,
        "task_type": task.task_type,
        "pddl_params": {"object_target": task.object_target,
                        "parent_target": task.parent_target,
                        "toggle_target": task.toggle_target,
                        "mrecep_target": "", "object_sliced": False},
        "scene": {"floor_plan": f"FloorPlan{task.scene}", "scene_num": task.scene,
                  "room_type": scene.room},
        "turk_annotations": {"anns": [{"task_desc": description, "high_descs": [],
                                       "votes": [], "assignment_id": "templated"}]},
        "plan": {"high_pddl": [{"high_idx": i, "command": c} for i, c in enumerate(plan)]},
        "split": split,
        "generator": {"name": "lskill_jax.envs.alfworld.gamegen",
                      "version": GENERATOR_VERSION, "seed": seed, "index": index,
                      "attempt": attempt},
    }
    return task, trial, gamedata, traj
  raise RuntimeError(
      f"Could not make a winnable game for {split} #{index} in {max_attempts} attempts; "
      "this points to a bug in the generator or a broken alfworld install.")


_WORKER_CHECKER: GameChecker | None = None


def _make_game_job(job: tuple[str, int, int, str]):
  # Runs in a worker process: one engine per process, created on first use.
  global _WORKER_CHECKER
  if _WORKER_CHECKER is None:
    _WORKER_CHECKER = GameChecker()
  split, index, seed, task_type = job
  return (index,) + make_game(split, index, seed, task_type, _WORKER_CHECKER)


def generate_split(root: str, split: str, num_games: int, seed: int = 0,
                   task_types: Iterable[str] = TASK_TYPES, workers: int = 1,
                   overwrite: bool = False) -> Iterator[GeneratedGame]:
  """Generate `num_games` games of a split under `root` (official layout), lazily.

  Game i has task type `task_types[i % len(task_types)]`, so any six consecutive games
  cover all six types. Yields each game, in index order, once its files are on disk.
  `workers` > 1 builds games in that many processes; the output does not change.
  A split folder that already holds files is refused (games of another run would mix
  in) unless `overwrite`, which deletes that split folder first.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
  split_dir = os.path.join(root, DATA_DIRNAME, split)
  if os.path.isdir(split_dir) and os.listdir(split_dir):
    if not overwrite:
      raise FileExistsError(
          f"{split_dir} already holds games. Choose another output folder, or pass "
          "overwrite=True (--overwrite) to replace that split.")
    shutil.rmtree(split_dir)
  chosen = set(task_types)
  types = tuple(t for t in TASK_TYPES if t in chosen)
  if not types or chosen - set(TASK_TYPES):
    raise ValueError(f"Task types must be a non-empty subset of {TASK_TYPES}; got {sorted(chosen)}.")
  for t in types:
    _pool(split, t)  # fail early if a split cannot hold a type
  jobs = [(split, i, seed, types[i % len(types)]) for i in range(num_games)]
  if workers > 1 and num_games > 1:
    # spawn, not fork: forking a process that has JAX's threads running can deadlock.
    pool = multiprocessing.get_context("spawn").Pool(min(workers, num_games))
    results = pool.imap(_make_game_job, jobs)
  else:
    pool, results = None, map(_make_game_job, jobs)
  try:
    for index, task, trial, gamedata, traj in results:
      game_dir = os.path.join(root, DATA_DIRNAME, split, task.dirname, trial)
      # traj_data.json last: AlfredTWEnv only considers folders that have it.
      atomic_write_text(os.path.join(game_dir, "game.tw-pddl"), _dumps(gamedata))
      atomic_write_text(os.path.join(game_dir, "traj_data.json"), _dumps(traj))
      yield GeneratedGame(split, index, task, game_dir, tuple(gamedata["walkthrough"]))
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()


def generate_games(root: str, num_games: Mapping[str, int], seed: int = 0,
                   task_types: Iterable[str] = TASK_TYPES, workers: int = 1,
                   overwrite: bool = False) -> list[GeneratedGame]:
  """Generate several splits: `num_games` maps split name -> number of games."""
  unknown = set(num_games) - set(SPLITS)
  if unknown:
    raise ValueError(f"Unknown splits {sorted(unknown)}; expected some of {SPLITS}.")
  games = []
  for split in SPLITS:
    if num_games.get(split, 0) > 0:
      games.extend(generate_split(root, split, num_games[split], seed, task_types, workers,
                                  overwrite))
  return games
