"""NetHackBatchEnv: TorchRL contract, seeding, replayed start states, episode bookkeeping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nle import nethack
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs

from lit_rl.envs.nethack import (
    TRUNCATED,
    NetHackBatchEnv,
    StartState,
    load_start_states,
    save_start_states,
)

# Moves and search: random play that neither quits nor wanders into menus.
SAFE_ACTIONS = [*range(8), nethack.ACTIONS.index(nethack.Command.SEARCH)]
QUIT = nethack.ACTIONS.index(nethack.Command.QUIT)
YES = nethack.ACTIONS.index(nethack.CompassDirection.NW)  # the 'y' key


def step(env: NetHackBatchEnv, actions) -> TensorDict:
    action = torch.as_tensor(actions, dtype=torch.int64)
    return env.step(TensorDict(action=action, batch_size=env.batch_size))["next"]


def safe_actions(steps: int, games: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(SAFE_ACTIONS, size=(steps, games))


@pytest.fixture
def env():
    env = NetHackBatchEnv(2, seed=0)
    yield env
    env.close()


def test_specs_and_keys(env):
    check_env_specs(env)
    out = env.reset()
    assert out["tty_chars"].shape == (2, 24, 80) and out["tty_chars"].dtype == torch.uint8
    assert out["tty_colors"].dtype == torch.int8 and out["tty_cursor"].shape == (2, 2)
    assert env.action_spec.n == 121
    nxt = step(env, [0, 1])
    assert nxt["reward"].shape == (2, 1) and nxt["reward"].dtype == torch.float32
    assert nxt["prev_action"].tolist() == [0, 1]
    assert nxt["dlvl"].tolist() == [1, 1]


def test_same_seed_same_games_and_games_differ(env):
    other = NetHackBatchEnv(2, seed=0)
    try:
        a, b = env.reset(), other.reset()
        assert torch.equal(a["tty_chars"], b["tty_chars"])
        assert not torch.equal(a["tty_chars"][0], a["tty_chars"][1])
        for actions in safe_actions(30, 2):
            assert torch.equal(step(env, actions)["tty_chars"], step(other, actions)["tty_chars"])
    finally:
        other.close()


def test_start_state_replay_is_deterministic(env, tmp_path):
    env.reset()
    for actions in safe_actions(60, 2):
        step(env, actions)
    state = env.current_start_state(0)
    assert len(state.actions) == 60 and state.dlvl == 1
    path = tmp_path / "states.json"
    save_start_states(path, [state])
    (loaded,) = load_start_states(path)
    assert loaded == state

    replay = NetHackBatchEnv(1, start_states=[loaded])
    try:
        start = replay.reset()
        assert torch.equal(start["tty_chars"][0], env._observe(np.zeros(2, bool))["tty_chars"][0])
        np.testing.assert_array_equal(replay._blstats[0], env._blstats[0])
        assert start["episode_score"].item() == 0  # score counts from the hand-over
        for actions in safe_actions(30, 2, seed=1):
            original = step(env, actions)
            replayed = step(replay, actions[:1])
            assert torch.equal(replayed["tty_chars"][0], original["tty_chars"][0])
            np.testing.assert_array_equal(replay._blstats[0], env._blstats[0])
    finally:
        replay.close()


def test_replay_of_random_keys_through_menus():
    """Any of the 121 keys (menus, prompts, #-commands) replays exactly, not just moves."""
    env = NetHackBatchEnv(1, seed=0)
    keys = np.random.default_rng(0).integers(121, size=(400, 1))
    try:
        env.reset()
        for actions in keys:
            assert not step(env, actions)["done"].any()
        chars, blstats = env._chars.copy(), env._blstats.copy()
        replay = NetHackBatchEnv(1, start_states=[env.current_start_state(0)])
        replay.reset()
        np.testing.assert_array_equal(replay._chars, chars)
        np.testing.assert_array_equal(replay._blstats, blstats)
        replay.close()
    finally:
        env.close()


def test_start_state_mismatch_fails_loudly():
    wrong = NetHackBatchEnv(1, start_states=[StartState(1, 2, [0, 1], dlvl=5)])
    try:
        with pytest.raises(RuntimeError, match="Dlvl 5"):
            wrong.reset()
    finally:
        wrong.close()


def test_corrupt_start_state_file(tmp_path):
    path = tmp_path / "states.json"
    path.write_text('{"format": "raw_keys", "start_states": [{"core_seed": 1')
    with pytest.raises(ValueError, match=str(path)):
        load_start_states(path)
    path.write_text('{"format": "raw_keys", "start_states": [{"core_seed": 1}]}')
    with pytest.raises(ValueError, match="corrupt"):
        load_start_states(path)


def test_unmarked_start_state_file_asks_to_record_again(tmp_path):
    """Files from before raw-key prefixes hold gym-env actions, which this env would misreplay."""
    path = tmp_path / "states.json"
    path.write_text('[{"core_seed": 1, "disp_seed": 2, "actions": [0], "dlvl": 2}]')
    with pytest.raises(ValueError, match="make data ENV=nethack") as error:
        load_start_states(path)
    assert "\n" not in str(error.value)


# Truncates a seed-5 game while it waits for a key (a y/n question, then a --More--) and resets it.
# Resetting a game in that state was seen to abort the whole process inside NLE (commit 4611dae;
# ``_dismiss_waits`` answers first now), so this runs in a child process whose exit code we read.
RESET_WHILE_WAITING = """
import torch
from nle import nethack
from tensordict import TensorDict
from lit_rl.envs.nethack import NetHackBatchEnv

pray, yes = nethack.ACTIONS.index(nethack.Command.PRAY), nethack.ACTIONS.index(ord("y"))
for actions in ([pray], [pray, yes]):
    env = NetHackBatchEnv(1, seed=5, max_episode_steps=len(actions))
    env.reset()
    for action in actions:
        out = env.step(TensorDict(action=torch.tensor([action]), batch_size=[1]))["next"]
    waiting = env._internal[0, 1] or env._internal[0, 3]
    assert out["truncated"].item() and waiting, "the step cap did not cut the game at a wait"
    turns = int(env.reset()["episode_turns"].item())
    top_line = bytes(env._chars[0, 0]).decode("latin-1")
    print(turns, int(env._internal[0, 1] or env._internal[0, 3]), "pray" in top_line)
    env.close()
"""


def test_reset_of_a_game_truncated_at_a_prompt_starts_a_fresh_game():
    root = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", RESET_WHILE_WAITING], cwd=root,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["1 0 False", "1 0 False"]


def test_partial_reset_keeps_other_games(env):
    env.reset()
    for actions in safe_actions(10, 2):
        last = step(env, actions)
    request = last.clone().set("_reset", torch.tensor([[True], [False]]))
    reset = env.reset(request)
    assert torch.equal(reset["tty_chars"][1], last["tty_chars"][1])
    assert not torch.equal(reset["tty_chars"][0], last["tty_chars"][0])
    assert env._steps.tolist() == [0, 10]
    # Game 0's second episode is a new seeded game, not a repeat of its first.
    first = NetHackBatchEnv(1, seed=0).reset()["tty_chars"][0]
    assert not torch.equal(reset["tty_chars"][0], first)


def test_truncation_writes_episode_statistics():
    env = NetHackBatchEnv(2, seed=0, max_episode_steps=5)
    try:
        env.reset()
        for actions in safe_actions(4, 2):
            out = step(env, actions)
            assert not out["done"].any() and not out["episode_end"].any()
        out = step(env, [0, 0])
        assert out["truncated"].all() and out["done"].all() and not out["terminated"].any()
        assert out["episode_end"].all()
        assert out["episode_end_type"].tolist() == [TRUNCATED, TRUNCATED]
        assert out["episode_depth"].tolist() == [1, 1] and (out["episode_turns"] >= 1).all()
        assert env.last_death_causes() == ["truncated", "truncated"]
        with pytest.raises(RuntimeError, match="reset them first"):
            step(env, [0, 0])
    finally:
        env.close()


def test_quitting_terminates_with_cause(env):
    env.reset()
    step(env, [QUIT, 0])
    out = step(env, [YES, 0])
    assert out["terminated"].tolist() == [[True], [False]]
    assert out["episode_end"].tolist() == [True, False]
    assert out["episode_end_type"].tolist() == [int(nethack.QUIT), -1]
    assert env.last_death_causes() == ["quit", None]


def test_reward_is_score_delta_and_clipping():
    env = NetHackBatchEnv(2, seed=4, clip_reward=1.0)
    try:
        env.reset()
        rewards, scores = [], []
        for actions in safe_actions(150, 2):
            out = step(env, actions)
            rewards.append(out["reward"].squeeze(-1))
            scores.append(out["episode_score"])
        rewards, scores = torch.stack(rewards), torch.stack(scores)
        assert scores[-1].max() > 1, "seed 4 scores 7 points: big enough to clip"
        assert rewards.abs().max() <= 1.0
        deltas = torch.diff(scores, dim=0, prepend=torch.zeros(1, 2, dtype=torch.int64))
        torch.testing.assert_close(rewards, deltas.float().clamp(-1, 1))
    finally:
        env.close()


def test_collector_keeps_episode_ends():
    torch.manual_seed(0)  # the collector's random policy
    env = NetHackBatchEnv(2, seed=0, max_episode_steps=8)
    collector = Collector(env, None, frames_per_batch=40, total_frames=40)
    try:
        (batch,) = list(collector)
        ends = batch["next", "episode_end"]
        assert batch.shape == (2, 20) and ends.sum() >= 4
        assert torch.equal(ends, batch["next", "done"].squeeze(-1))
        assert ((batch["next", "episode_end_type"] != -1) == ends).all()
        after_end = torch.nn.functional.pad(ends[:, :-1], (1, 0))
        assert (batch["prev_action"][after_end] == 0).all()  # an end is followed by a reset
    finally:
        collector.shutdown()
