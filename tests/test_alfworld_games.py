"""Generated ALFWorld games: official layout, determinism, unseen split, AlfredTWEnv, experts."""

import json
import os
import re
import shutil

import pytest

pytest.importorskip("alfworld.agents.environment.alfred_tw_env",
                    reason="needs `pip install alfworld==0.4.2`")

from lskill_jax.envs import alfworld as aw  # noqa: E402

PER_SPLIT = 6  # game i has type i % 6: six games cover every type
_FOLDER = re.compile(r"^(?P<task>[a-z_]+)-(?P<obj>[A-Za-z]+)-None-(?P<target>[A-Za-z]+)-(?P<scene>\d+)$")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("alfworld"))
  aw.generate_games(out, {s: PER_SPLIT for s in aw.SPLITS}, seed=0, workers=2)
  return out


def _game_dirs(root, split):
  base = os.path.join(root, aw.DATA_DIRNAME, split)
  return sorted(os.path.join(base, task, trial)
                for task in os.listdir(base) for trial in os.listdir(os.path.join(base, task)))


def _read_tree(folder):
  out = {}
  for dirpath, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def test_official_layout_and_all_six_types(root):
  for split in aw.SPLITS:
    dirs = _game_dirs(root, split)
    assert len(dirs) == PER_SPLIT
    types = set()
    for game_dir in dirs:
      assert sorted(os.listdir(game_dir)) == ["game.tw-pddl", "traj_data.json"]
      match = _FOLDER.match(os.path.basename(os.path.dirname(game_dir)))
      assert match, game_dir
      assert os.path.basename(game_dir).startswith("trial_")
      with open(os.path.join(game_dir, "traj_data.json")) as f:
        traj = json.load(f)
      with open(os.path.join(game_dir, "game.tw-pddl")) as f:
        game = json.load(f)
      assert traj["task_type"] == match["task"]
      assert traj["scene"]["scene_num"] == int(match["scene"])
      assert traj["pddl_params"]["object_target"] == match["obj"]
      assert set(game) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
      assert game["solvable"] is True and game["walkthrough"]
      assert "UNKNOWN GOAL" not in game["grammar"]
      types.add(traj["task_type"])
    assert types == set(aw.TASK_TYPES), split


def test_same_seed_gives_identical_files(root, tmp_path):
  # Games are independent of each other, so two games equal the first two of six.
  again = str(tmp_path / "again")
  aw.generate_games(again, {"valid_unseen": 2}, seed=0)
  split = os.path.join(aw.DATA_DIRNAME, "valid_unseen")
  first_two = {os.path.relpath(d, os.path.join(root, split)) for d in _game_dirs(root, "valid_unseen")
               if d.endswith(("000000", "000001"))}
  want = {k: v for k, v in _read_tree(os.path.join(root, split)).items()
          if os.path.dirname(k) in first_two}
  assert _read_tree(os.path.join(again, split)) == want

  other = str(tmp_path / "other_seed")
  aw.generate_games(other, {"valid_unseen": 1}, seed=1)
  assert _read_tree(os.path.join(other, split)) != {k: v for k, v in want.items() if "000000" in k}

  with pytest.raises(FileExistsError, match="overwrite"):
    aw.generate_games(again, {"valid_unseen": 1}, seed=0)


def test_unseen_split_uses_new_scenes_and_pairs(root):
  seen_scenes = set(aw.split_scenes("train")) | set(aw.split_scenes("valid_seen"))
  assert not seen_scenes & set(aw.split_scenes("valid_unseen"))
  for task_type in aw.TASK_TYPES:
    seen = aw.split_candidates("train", task_type) + aw.split_candidates("valid_seen", task_type)
    unseen = aw.split_candidates("valid_unseen", task_type)
    assert unseen, task_type
    assert not ({(t.object_target, t.target) for t in seen}
                & {(t.object_target, t.target) for t in unseen})

  def scenes_and_pairs(split):
    found = [_FOLDER.match(os.path.basename(os.path.dirname(d))) for d in _game_dirs(root, split)]
    return {int(m["scene"]) for m in found}, {(m["obj"], m["target"]) for m in found}

  unseen_scenes, unseen_pairs = scenes_and_pairs("valid_unseen")
  for split in ("train", "valid_seen"):
    scenes, pairs = scenes_and_pairs(split)
    assert not scenes & unseen_scenes and not pairs & unseen_pairs


# Between the next two tests every sampled game is replayed once: valid_seen through
# AlfredTWEnv's batched gym environment, the other splits through expert_trajectories.

def test_splits_load_and_are_won_through_alfredtwenv(root):
  for split in aw.SPLITS:
    games = aw.load_games(split, data_root=root, prefer_official=False)
    assert games.source == "generated" and len(games) == PER_SPLIT
  env = aw.AlfworldEnv("valid_seen", data_root=root, batch_size=3, prefer_official=False)
  try:
    replays = aw.replay_walkthroughs(env)
  finally:
    env.close()
  assert len(replays) == PER_SPLIT
  assert {r.task_type for r in replays.values()} == set(aw.TASK_TYPES)
  for r in replays.values():
    assert r.first_observation.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "Your task is to:" in r.first_observation
    assert not r.won_at_start and r.won, r.game_file


def test_expert_wins_every_game(root):
  files = [os.path.join(d, "game.tw-pddl") for s in ("train", "valid_unseen") for d in _game_dirs(root, s)]
  trajectories = list(aw.expert_trajectories(files, expert="walkthrough", workers=2))
  assert [t.game_file for t in trajectories] == files
  assert all(t.won for t in trajectories), [t.game_file for t in trajectories if not t.won]
  assert {t.task_type for t in trajectories} == set(aw.TASK_TYPES)
  for traj in trajectories:
    assert "Your task is to:" in traj.steps[0].observation
    assert all(step.action in step.admissible_commands for step in traj.steps)


def test_missing_data_says_how_to_generate(tmp_path, monkeypatch):
  monkeypatch.setenv(aw.ALFWORLD_DATA_VAR, str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="make_alfworld_games"):
    aw.resolve_split_dir("valid_seen", data_root=str(tmp_path / "nothing_here"))


def test_official_data_in_env_var_is_preferred(root, tmp_path, monkeypatch):
  # An official-looking copy (no 'generator' record) under $ALFWORLD_DATA wins over data_root.
  game_dir = _game_dirs(root, "valid_seen")[0]
  official = tmp_path / "official" / aw.DATA_DIRNAME / "valid_seen" / "task" / "trial_x"
  shutil.copytree(game_dir, official)
  with open(official / "traj_data.json") as f:
    traj = json.load(f)
  del traj["generator"]
  with open(official / "traj_data.json", "w") as f:
    json.dump(traj, f)
  monkeypatch.setenv(aw.ALFWORLD_DATA_VAR, str(tmp_path / "official"))
  chosen = aw.resolve_split_dir("valid_seen", data_root=root)
  assert chosen == str(tmp_path / "official" / aw.DATA_DIRNAME / "valid_seen")
  assert aw.data_source(chosen) == "official"
  assert aw.resolve_split_dir("valid_seen", data_root=root, prefer_official=False).startswith(root)
