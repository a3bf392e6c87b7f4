"""AppleRetrieval follows the paper's appendix A definition, in both front-ends."""

import gymnasium
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs, step_mdp

from lit_rl.envs.apple import EPISODE_CAP, AppleRetrievalEnv


def play(env, actions):
    td = env.reset()
    out = []
    for a in actions:
        td["action"] = torch.full(env.batch_size, a)
        td = env.step(td)
        out.append(td["next"].clone())
        td = step_mdp(td)
    return out


def test_specs_are_consistent():
    check_env_specs(AppleRetrievalEnv(4, length=5))


def test_optimal_episode_walks_to_apple_and_back():
    """Phase 1 observes −c; reaching x = M switches to phase 2 (+c); home in phase 2 ends it."""
    length, scale = 3, 0.5
    steps = play(AppleRetrievalEnv(2, length, scale), [1, 1, 1, 0, 0, 0])
    observations = [s["observation"][0, 0].item() for s in steps]
    assert observations == [-scale, -scale, scale, scale, scale, scale]
    assert [s["reward"][0, 0].item() for s in steps] == [1.0] * 6
    assert [s["terminated"][0, 0].item() for s in steps] == [False] * 5 + [True]
    assert steps[-1]["success"].all()


def test_wrong_direction_costs_and_walls_hold():
    """A step against the phase's direction earns −1; x never leaves [0, M]."""
    env = AppleRetrievalEnv(1, length=3)
    steps = play(env, [0, 0, 1])
    assert [s["reward"].item() for s in steps] == [-1.0, -1.0, 1.0]
    assert env._x.item() == 1


def test_far_start_is_phase_two_at_the_apple():
    env = AppleRetrievalEnv(3, length=4, scale=0.2, start="far")
    td = env.reset()
    assert torch.allclose(td["observation"], torch.full((3, 1), 0.2))
    steps = play(env, [0] * 4)
    assert steps[-1]["terminated"].all() and sum(s["reward"][0].item() for s in steps) == 4


def test_episode_cap_truncates_at_100_steps():
    steps = play(AppleRetrievalEnv(2, length=30), [0] * EPISODE_CAP)
    assert not any(s["done"].any() for s in steps[:-1])
    assert steps[-1]["truncated"].all() and not steps[-1]["terminated"].any()


def test_partial_reset_only_touches_masked_envs():
    env = AppleRetrievalEnv(2, length=5)
    play(env, [1, 1])
    env.reset(TensorDict(_reset=torch.tensor([[True], [False]]), batch_size=[2]))
    assert env._x.tolist() == [0, 2]


def test_gymnasium_registration_matches_batched_dynamics():
    env = gymnasium.make("lit_rl/AppleRetrieval-v0", length=3, scale=0.5)
    obs, _ = env.reset(seed=0)
    rewards, terminated = [], False
    for a in [1, 1, 1, 0, 0, 0]:
        obs, r, terminated, truncated, info = env.step(a)
        rewards.append(r)
    assert terminated and rewards == [1.0] * 6 and np.isclose(obs[0], 0.5)


def test_unknown_start_is_rejected():
    with pytest.raises(ValueError, match="unknown start"):
        AppleRetrievalEnv(1, start="middle")
