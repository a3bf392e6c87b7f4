"""The scripted NetHack expert: it plays, answers prompts, and its start states replay exactly."""

import numpy as np
import pytest
from nle import nethack

from lit_rl.experts import nethack_expert as ne


def test_expert_plays_a_seeded_game():
    env, expert = ne.make_env(), ne.NetHackExpert(seed=1)
    env.seed(1, 2, False)
    obs, _ = env.reset()
    for _ in range(400):
        action = expert.act(obs)
        assert 0 <= action < len(nethack.ACTIONS)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    else:
        assert obs["blstats"][nethack.NLE_BL_TIME] > 100  # time passes: it is not stuck in menus
    env.close()


def _prompt(message: str) -> dict:
    obs = {"message": np.zeros(256, np.uint8), "misc": np.array([1, 0, 0])}
    obs["message"][: len(message)] = np.frombuffer(message.encode(), np.uint8)
    return obs


def test_prompts_are_answered():
    expert = ne.NetHackExpert()
    assert expert.act(_prompt("Are you sure you want to pray? [yn] (n) ")) == ne.key("y")
    assert expert.act(_prompt("Really attack the watchman? [yn] (n) ")) == ne.ESC
    assert expert.act(_prompt("Do you want your possessions identified? [ynq] ")) == ne.ESC
    expert._expect, expert._answer = "want to eat", ne.key("f")
    assert expert.act(_prompt("What do you want to eat? [fg or ?*] ")) == ne.key("f")


def test_start_state_replays_deterministically():
    """The recorded prefix holds the gym env's own keys too, so the batch env replays it exactly."""
    found = ne.play_to_depths(7, 8, [2], max_steps=3000)
    if 2 not in found:
        pytest.skip("the expert did not reach Dlvl 2 within the step cap on this seed")
    state, blstats = found[2]
    assert state.dlvl >= 2 and (state.core_seed, state.disp_seed) == (7, 8)
    assert ne.play_until_depth(7, 8, 2, max_steps=3000) == state  # the expert is deterministic
    assert ne.key(" ") in state.actions  # at least one --More-- the gym env dismissed by itself
    for _ in range(2):
        assert np.array_equal(ne.replay(state), blstats)
