"""Stable-Baselines3 policies converted to lit_rl compute SB3's own action distribution.

Each policy is trained by SB3 itself for a few hundred steps (seconds) and saved as SB3 saves; SB3
loads it as the reference (its own loader, used only here) and lit_rl reads the same zip with its
own reader (no SB3 import, no unpickling). Both then see the same observations: discrete logits,
Gaussian means and scales, SAC's squashed-Gaussian log-probabilities and deterministic actions, and
the state values must agree.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.models.policy_io import load_policy
from lit_rl.scenarios import Gymnasium

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv  # noqa: E402

SUBSPACES = {"close": {"reset": None}, "far": {"reset": None}}
SMALL_IMAGES = {"screen_height": 36, "screen_width": 36}  # the Nature CNN's smallest input
gymnasium.register(
    "lit_rl_test/FakeImage-v0", entry_point=FakeImageEnv, kwargs=SMALL_IMAGES, max_episode_steps=10
)
gymnasium.register(
    "lit_rl_test/FakeImageBox-v0",
    entry_point=FakeImageEnv,
    kwargs={**SMALL_IMAGES, "discrete": False},
    max_episode_steps=10,
)
gymnasium.register("lit_rl_test/MultiObs-v0", entry_point=SimpleMultiObsEnv, max_episode_steps=100)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread is fastest on the shared cores."""


def trained(tmp_path, algorithm: str, policy: str, env_id: str, steps: int = 64, **kwargs):
    """An SB3 model trained briefly and saved; returns (zip path, SB3's own reload of it)."""
    cls = getattr(sb3, algorithm)
    model = cls(policy, gymnasium.make(env_id), seed=0, device="cpu", **kwargs)
    model.learn(steps)
    path = tmp_path / f"{algorithm}_{env_id.replace('/', '_')}.zip"
    model.save(path)
    return path, cls.load(path, device="cpu")


def converted(path, env_id: str, algorithm: str = "ppo"):
    scenario = Gymnasium(env_id, subspaces=SUBSPACES, algorithm=algorithm)
    policy = scenario.make_policy().modules()
    if algorithm == "sac":
        from lit_rl.training.sac import SACFineTuning

        module = SACFineTuning(scenario, pretrained=str(path))
        return scenario, module.policy, module
    load_policy(path, policy, scenario.describe())
    return scenario, policy, None


def observations(scenario: Gymnasium, n: int = 32) -> dict[str, np.ndarray]:
    """``n`` observations sampled from the environment's space (seeded), by TorchRL key."""
    space = scenario.observation_space
    space.seed(0)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, gymnasium.spaces.Dict):
        return {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    return {"observation": np.stack(samples)}


def sb3_view(obs: dict[str, np.ndarray], model) -> torch.Tensor | dict[str, torch.Tensor]:
    """The observations as SB3's policy sees them: images channels first (VecTransposeImage)."""
    space = model.observation_space
    out = {}
    for key, value in obs.items():
        sub = space[key] if isinstance(space, gymnasium.spaces.Dict) else space
        if value.ndim == 4 and value.shape[1:] != sub.shape:
            value = value.transpose(0, 3, 1, 2)
        out[key] = torch.as_tensor(value)
    return out if isinstance(space, gymnasium.spaces.Dict) else out["observation"]


def lit_view(obs: dict[str, np.ndarray]) -> TensorDict:
    n = len(next(iter(obs.values())))
    return TensorDict({k: torch.as_tensor(v) for k, v in obs.items()}, batch_size=[n])


@pytest.mark.parametrize(
    ("algorithm", "policy", "env_id"),
    [
        ("PPO", "MlpPolicy", "CartPole-v1"),
        ("A2C", "MlpPolicy", "Acrobot-v1"),
        ("PPO", "MlpPolicy", "FrozenLake-v1"),  # Discrete observations: one-hot
        ("PPO", "CnnPolicy", "lit_rl_test/FakeImage-v0"),  # channels-last uint8 images
        ("PPO", "MultiInputPolicy", "lit_rl_test/MultiObs-v0"),  # a dict of a vector and an image
    ],
)
def test_discrete_policies_give_sb3s_distribution(tmp_path, algorithm, policy, env_id):
    kwargs = {"n_steps": 64, "batch_size": 64, "n_epochs": 1} if algorithm == "PPO" else {"n_steps": 8}
    path, reference = trained(tmp_path, algorithm, policy, env_id, **kwargs)
    scenario, ours, _ = converted(path, env_id)
    obs = observations(scenario)
    with torch.no_grad():
        theirs = reference.policy.get_distribution(sb3_view(obs, reference)).distribution
        mine = ours["actor"].get_dist(lit_view(obs))
        torch.testing.assert_close(mine.logits.log_softmax(-1), theirs.logits.log_softmax(-1))
        value = ours["critic"](lit_view(obs))["state_value"]
        torch.testing.assert_close(value, reference.policy.predict_values(sb3_view(obs, reference)))


@pytest.mark.parametrize("algorithm", ["PPO", "A2C"])
def test_continuous_ppo_and_a2c_give_sb3s_gaussian(tmp_path, algorithm):
    kwargs = {"n_steps": 64, "batch_size": 64, "n_epochs": 1} if algorithm == "PPO" else {"n_steps": 8}
    path, reference = trained(tmp_path, algorithm, "MlpPolicy", "Pendulum-v1", **kwargs)
    scenario, ours, _ = converted(path, "Pendulum-v1")
    obs = observations(scenario)
    actions = torch.linspace(-2, 2, 32).unsqueeze(-1)
    with torch.no_grad():
        theirs = reference.policy.get_distribution(sb3_view(obs, reference))
        mine = ours["actor"].get_dist(lit_view(obs))
        torch.testing.assert_close(mine.mean, theirs.distribution.mean)
        torch.testing.assert_close(mine.stddev, theirs.distribution.stddev)
        torch.testing.assert_close(mine.log_prob(actions), theirs.log_prob(actions))


@pytest.mark.parametrize(
    ("policy", "env_id", "kwargs"),
    [
        ("MlpPolicy", "Pendulum-v1", {}),  # actions in [−2, 2]
        ("CnnPolicy", "lit_rl_test/FakeImageBox-v0", {"buffer_size": 256}),  # images, actions in [−1, 1]
    ],
)
def test_sac_gives_sb3s_squashed_gaussian_and_critics(tmp_path, policy, env_id, kwargs):
    path, reference = trained(
        tmp_path, "SAC", policy, env_id, steps=32, learning_starts=16, batch_size=16, **kwargs
    )
    scenario, ours, module = converted(path, env_id, algorithm="sac")
    obs = observations(scenario, 16)
    seen = sb3_view(obs, reference)
    space = scenario.action_space
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    actions = low + (high - low) * torch.rand(16, *space.shape, generator=torch.Generator().manual_seed(0))
    scaled = 2.0 * (actions - low) / (high - low) - 1.0  # SB3's scale_action: what its networks read
    with torch.no_grad():
        mean, log_std, _ = reference.actor.get_action_dist_params(seen)
        theirs = reference.actor.action_dist.proba_distribution(mean, log_std)
        # SB3's log-probability is of the scaled action; the affine map to the bounds adds the
        # log of its Jacobian, Σ log((high − low) / 2)
        expected = theirs.log_prob(scaled.clamp(-1 + 1e-6, 1 - 1e-6)) - torch.log((high - low) / 2).sum()
        mine = ours["actor"].get_dist(lit_view(obs))
        torch.testing.assert_close(mine.log_prob(actions), expected, atol=1e-3, rtol=1e-4)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            greedy = ours["actor"](lit_view(obs))["action"]
        unscaled = low + 0.5 * (reference.actor(seen, deterministic=True) + 1.0) * (high - low)
        torch.testing.assert_close(greedy, unscaled, atol=1e-5, rtol=1e-5)
        q_theirs = reference.critic(seen, scaled)
        q_net = module.policy["critic"]  # the loss's first Q copy equals SB3's qf0 …
        params = module.sac_loss.qvalue_network_params
        for k in range(2):  # … and its second qf1
            with params[k].to_module(q_net):
                q_mine = q_net(lit_view(obs).set("action", actions))["state_action_value"]
            torch.testing.assert_close(q_mine, q_theirs[k], atol=1e-5, rtol=1e-5)
        alpha = module.sac_loss.log_alpha.exp()
        torch.testing.assert_close(alpha.reshape(1), reference.log_ent_coef.exp().reshape(1))
