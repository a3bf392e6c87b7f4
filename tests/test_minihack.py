"""The two-phase MiniHack level (docs/minihack.md): the level MiniHack compiles is the designed map,
a saved FAR start state replays into the FAR phase, the phases' rewards and success, and the
scenario's masked ScaledNet."""

from __future__ import annotations

import json

import pytest
import torch
from nle import nethack
from tensordict import TensorDict

from lit_rl.envs.minihack import (
    MiniHackBatchEnv,
    load_start_states,
    make_far_start_states,
    save_start_states,
)
from lit_rl.envs.minihack_level import FAR_ROOM, MAP, MOVE_ACTIONS, MOVES, ORIGIN, STAIRS, path_to_far
from lit_rl.evaluation import evaluate_episodes
from lit_rl.scenarios.minihack import MASKED_LOGIT, MiniHack

WEST, SOUTH_WEST = MOVES[nethack.CompassDirection.W], MOVES[nethack.CompassDirection.SW]


def screen(td, game: int = 0) -> list[str]:
    return [bytes(row).decode("latin-1") for row in td["tty_chars"][game].numpy()]


def hero(td, game: int = 0) -> tuple[int, int]:
    """The hero's map position, read off NetHack's screen (the cursor stands on the hero)."""
    row, col = (int(v) for v in td["tty_cursor"][game])
    return col - ORIGIN[0], row - 1 - ORIGIN[1]


def act(env: MiniHackBatchEnv, key: int) -> TensorDict:
    return env.step(TensorDict(action=torch.full((env.num_games,), key), batch_size=env.batch_size))["next"]


@pytest.fixture(scope="module")
def far_states():
    return make_far_start_states(3, seed=5)


def test_minihack_draws_the_designed_level_where_the_phase_test_expects_it():
    """A des file MiniHack fails to compile leaves another level in place, silently: the start room's
    walls must be on screen where ``MAP`` and ``ORIGIN`` put them, the hero inside it."""
    env = MiniHackBatchEnv(2, seed=3)
    td = env.reset()
    for game in range(2):
        rows = screen(td, game)
        for y in range(5):  # the lit start room and its doorway, as drawn
            drawn = rows[ORIGIN[1] + 1 + y][ORIGIN[0] + 5 : ORIGIN[0] + 10]
            drawn = drawn.replace("@", ".").replace("<", ".")
            assert drawn == MAP[y][5:10], (y, drawn)
        x, y = hero(td, game)
        assert 6 <= x <= 8 and 1 <= y <= 3
    assert td["phase"].tolist() == [0, 0]
    env.close()


def test_saved_far_start_state_replays_into_the_far_phase(tmp_path, far_states):
    path = tmp_path / "far.json"
    save_start_states(path, far_states)
    loaded = load_start_states(path)
    assert loaded == far_states
    env = MiniHackBatchEnv(3, seed=0, start_states=loaded)
    td = env.reset()
    assert td["phase"].tolist() == [1, 1, 1] and td["episode_reached_far"].all()
    x1, y1, x2, y2 = FAR_ROOM
    for game in range(3):
        x, y = hero(td, game)
        assert x1 <= x <= x2 and y1 <= y <= y2, (x, y)
    env.close()
    # a prefix cut short stops in the corridor: the replay check names it
    short = [type(s)(s.core_seed, s.disp_seed, s.actions[:-3]) for s in far_states]
    with pytest.raises(RuntimeError, match="not into its phase"):
        MiniHackBatchEnv(1, seed=0, start_states=short).reset()


def test_far_start_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "raw_keys", "start_states": []}))
    with pytest.raises(ValueError, match="write it again") as error:
        load_start_states(bad)
    assert "\n" not in str(error.value)


def test_far_phase_success_and_rewards(far_states):
    """From the hand-over, walking west reaches the staircase: success, evaluation reward 1, done.
    From CLOSE, the walker's path into the FAR room earns the phase bonus once (training reward)."""
    env = MiniHackBatchEnv(1, seed=0, start_states=far_states[:1])
    td = env.reset()
    x, y = hero(td)
    keys = [SOUTH_WEST] + [WEST] * (x - 1 - STAIRS[0])
    rewards = []
    for key in keys:
        td = act(env, key)
        rewards.append(td["reward"].item())
    assert td["success"].item() and td["done"].item() and td["episode_success"].item()
    assert rewards == [0.0] * (len(keys) - 1) + [1.0]
    env.close()

    env = MiniHackBatchEnv(1, seed=0, training_reward=True, far_bonus=0.5)
    td = env.reset()
    path = path_to_far(hero(td))
    bonus = []
    for key in path + [WEST]:
        td = act(env, key)
        bonus.append(td["reward"].item())
    assert bonus[len(path) - 1] == pytest.approx(0.5) and td["phase"].item() == 1
    assert all(abs(r) < 0.02 for i, r in enumerate(bonus) if i != len(path) - 1)
    env.close()


def test_random_reference_draws_only_the_tasks_moves():
    env = MiniHackBatchEnv(8, seed=1)
    env.reset()
    actions = torch.cat([env.rand_action()["action"] for _ in range(20)])
    assert set(actions.tolist()) <= set(MOVE_ACTIONS) and len(set(actions.tolist())) == 8
    env.close()


def test_scenario_policy_acts_only_with_moves(one_torch_thread, far_states, tmp_path):
    path = tmp_path / "far.json"
    save_start_states(path, far_states)
    scenario = MiniHack(start_states=str(path), max_episode_steps=5)
    actor = scenario.make_policy().modules()["actor"]
    env = scenario.make_env(4, "far", seed=0)
    td = actor(env.reset())
    masked = torch.ones(td["logits"].shape[-1], dtype=torch.bool)
    masked[list(MOVE_ACTIONS)] = False
    assert (td["logits"][..., masked] == MASKED_LOGIT).all()
    assert set(td["action"].tolist()) <= set(MOVE_ACTIONS)
    metrics = evaluate_episodes(env, actor, scenario.max_episode_steps)
    assert metrics["episodes"] == 4 and 0.0 <= metrics["success_rate"] <= 1.0
    assert metrics["reached_far"] == 1.0
    env.close()
