"""RND and the two-head Atari actor-critic (paper section 4)."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives.value.functional import generalized_advantage_estimate

from lit_rl.envs.montezuma import MontezumaEnv
from lit_rl.models.atari_cnn import make_atari_actor_critic
from lit_rl.models.rnd import (
    RND,
    WARMUP_STEPS,
    RunningMeanStd,
    combined_advantage,
    warm_up_observation_stats,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames(n: int, seed: int) -> torch.Tensor:
    """Blocky uint8 frame stacks [n, 4, 84, 84], more image-like than per-pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, 4, 12, 12), generator=g, dtype=torch.uint8)
    return coarse.repeat_interleave(7, -1).repeat_interleave(7, -2)


def test_running_mean_std_matches_numpy_over_batches():
    rms = RunningMeanStd((3,))
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(500, 3))
    for chunk in np.array_split(data, 7):
        rms.update(torch.from_numpy(chunk))
    assert torch.allclose(rms.mean, torch.from_numpy(data.mean(0)), atol=1e-6)
    assert torch.allclose(rms.var, torch.from_numpy(data.var(0)), rtol=1e-3)


def test_intrinsic_reward_falls_on_repeated_observations():
    torch.manual_seed(0)
    rnd = RND(update_proportion=1.0)
    seen, unseen = _frames(8, 1), _frames(8, 2)
    rnd.update_obs_stats(torch.cat([seen, unseen]))
    before = rnd.intrinsic_reward(seen).mean()
    optimiser = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-3)
    for _ in range(12):
        optimiser.zero_grad()
        rnd.loss(seen).backward()
        optimiser.step()
    after = rnd.intrinsic_reward(seen).mean()
    assert after < 0.3 * before
    assert rnd.intrinsic_reward(unseen).mean() > 1.5 * after
    assert all(p.grad is None for p in rnd.target.parameters())


def test_predictor_update_proportion_masks_samples():
    frames = _frames(8, 3)
    rnd = RND(update_proportion=0.0)
    assert rnd.loss(frames).item() == 0.0
    rnd.update_proportion = 1.0
    full = rnd.intrinsic_reward(frames).mean() / rnd.feature_dim
    assert torch.allclose(rnd.loss(frames), full, rtol=1e-5)
    rnd.update_proportion = 0.25
    torch.manual_seed(0)
    keep = torch.rand(8) < 0.25
    torch.manual_seed(0)
    partial = rnd.loss(frames)
    expected = (rnd.intrinsic_reward(frames)[keep] / rnd.feature_dim).mean()
    assert torch.allclose(partial, expected, rtol=1e-5)


def test_intrinsic_normaliser_divides_by_std_of_discounted_returns():
    rnd = RND(gamma_int=0.5)
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    normalised = rnd.normalise_intrinsic(rewards)
    returns = torch.tensor([[1.0, 1.5, 1.75], [2.0, 1.0, 0.5]], dtype=torch.float64)
    assert torch.allclose(rnd.int_return_rms.var, returns.var(unbiased=False), rtol=1e-3)
    assert torch.allclose(normalised, rewards / rnd.int_return_rms.std.float())
    rnd.normalise_intrinsic(torch.zeros(2, 1))  # the discounted sum carries over rollouts
    assert torch.allclose(rnd.discounted_int_return, torch.tensor([0.875, 0.25], dtype=torch.float64))


def test_combined_advantage_weights_two_gae_streams():
    g = torch.Generator().manual_seed(0)
    shape = (3, 6, 1)
    r_ext, r_int, v_ext, nv_ext, v_int, nv_int = (torch.randn(shape, generator=g) for _ in range(6))
    done = torch.zeros(shape, dtype=torch.bool)
    done[:, 2] = True
    adv, target_ext, target_int = combined_advantage(r_ext, r_int, v_ext, nv_ext, v_int, nv_int, done, done)
    a_ext, t_ext = generalized_advantage_estimate(0.999, 0.95, v_ext, nv_ext, r_ext, done, done)
    never = torch.zeros_like(done)
    a_int, t_int = generalized_advantage_estimate(0.99, 0.95, v_int, nv_int, r_int, never, never)
    assert torch.allclose(adv, 2.0 * a_ext + 1.0 * a_int)
    assert torch.allclose(target_ext, t_ext) and torch.allclose(target_int, t_int)


def test_actor_critic_has_policy_and_two_value_heads():
    model = make_atari_actor_critic(18)
    td = TensorDict(pixels=_frames(5, 4), batch_size=[5])
    out = model(td.clone())
    assert out["logits"].shape == (5, 18)
    assert out["action"].shape == (5,)
    assert out["state_value"].shape == out["state_value_int"].shape == (5, 1)
    policy_only = model.get_policy_operator()(td.clone())
    assert "state_value" not in policy_only


def test_observation_warm_up_uses_random_steps():
    env = MontezumaEnv(2, seed=0)
    rnd = RND()
    warm_up_observation_stats(rnd, env)
    assert rnd.obs_rms.count.item() == pytest.approx(2 * WARMUP_STEPS, abs=1e-3)
    assert rnd.obs_rms.mean.mean() > 0
    env.close()
