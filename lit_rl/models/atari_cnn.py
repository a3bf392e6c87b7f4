"""The Nature Atari CNN (Mnih et al. 2015) as a PPO+RND actor-critic with two value heads.

RND (Burda et al. 2019) learns separate critics for the extrinsic and intrinsic returns because the
two streams use different discounts (0.999 and 0.99, paper section 4) and the intrinsic one is
non-episodic; they share the trunk with the policy.
"""

from __future__ import annotations

import math

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Categorical
from torchrl.modules import ActorValueOperator, ProbabilisticActor

FEATURES = 512


def nature_trunk(in_channels: int, out_features: int = FEATURES, *, leaky: bool = False) -> nn.Sequential:
    """conv 32 8×8 s4 → conv 64 4×4 s2 → conv 64 3×3 s1 → FC 512 on 84×84 inputs (float).

    `leaky` swaps ReLU for LeakyReLU, as RND's target and predictor networks do.
    """

    def act() -> nn.Module:
        return nn.LeakyReLU() if leaky else nn.ReLU()

    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4),
        act(),
        nn.Conv2d(32, 64, 4, stride=2),
        act(),
        nn.Conv2d(64, 64, 3, stride=1),
        act(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, out_features),
    )


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal weights, zero biases: the PPO/RND Atari initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


class PixelTrunk(nn.Module):
    """uint8 frame stack [*, 4, 84, 84] → 512 ReLU features (scales by 1/255 itself)."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.net = nature_trunk(in_channels)
        orthogonal_init(self.net, math.sqrt(2))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = pixels.shape[:-3]
        x = pixels.reshape(-1, *pixels.shape[-3:]).float().div_(255.0)
        return torch.relu(self.net(x)).reshape(*batch, FEATURES)


class TwoValueHeads(nn.Module):
    """Extrinsic and intrinsic state values from shared features, each [*, 1]."""

    def __init__(self):
        super().__init__()
        self.extrinsic = nn.Linear(FEATURES, 1)
        self.intrinsic = nn.Linear(FEATURES, 1)
        orthogonal_init(self, 1.0)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.extrinsic(hidden), self.intrinsic(hidden)


def make_atari_actor_critic(n_actions: int, in_channels: int = 4) -> ActorValueOperator:
    """TorchRL actor-critic: ``pixels`` → ``hidden`` → policy (``logits``, ``action``,
    ``action_log_prob``) and values (``state_value`` extrinsic, ``state_value_int`` intrinsic).

    `get_policy_operator()` gives the actor (trunk + policy head, for collectors and retention
    losses), `get_value_operator()` the critic, both over the one shared trunk.
    """
    trunk = TensorDictModule(PixelTrunk(in_channels), in_keys=["pixels"], out_keys=["hidden"])
    policy_head = nn.Linear(FEATURES, n_actions)
    orthogonal_init(policy_head, 0.01)
    actor = ProbabilisticActor(
        TensorDictModule(policy_head, in_keys=["hidden"], out_keys=["logits"]),
        in_keys=["logits"],
        out_keys=["action"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    values = TensorDictModule(
        TwoValueHeads(), in_keys=["hidden"], out_keys=["state_value", "state_value_int"]
    )
    return ActorValueOperator(trunk, actor, values)
