"""The PPO + RND actor-critic of the paper's Montezuma agent (section 4), as TorchRL modules.

The paper's RND agent follows jcwleo's random-network-distillation-pytorch (paper.md §4); this is
its ``CnnActorCriticNetwork`` (model.py, lines 74–158 at commit e383fb9):

    pixels/255 → conv 32 8×8 s4 → conv 64 4×4 s2 → conv 64 3×3 s1 → FC 256 → FC 448   (ReLU each)
    policy:  FC 448 → ReLU → FC n_actions
    values:  h = ReLU(FC 448(x)) + x;  V_ext = FC 1(h),  V_int = FC 1(h)

RND (Burda et al. 2019) learns separate critics for the extrinsic and intrinsic returns because the
two streams use different discounts (0.999 and 0.99) and the intrinsic one is non-episodic; both
share the trunk with the policy, and the 448-unit value layer (``extra_layer`` there) is shared by
the two heads. Initialisation as there (model.py lines 128–151): orthogonal with gain √2, then the
two value heads and both policy layers with gain 0.01, the value layer with gain 0.1; biases 0.
"""

from __future__ import annotations

import math

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Categorical
from torchrl.modules import ActorValueOperator, ProbabilisticActor

#: the Nature CNN's flattened conv output on 84×84 inputs
CONV_FEATURES = 64 * 7 * 7
#: width of the trunk's first fully connected layer (model.py line 106)
TRUNK_WIDTH = 256
#: width of the trunk's output and of the policy and value layers (model.py lines 110–125)
HIDDEN = 448
#: RND's target and predictor output width (model.py lines 189–216)
RND_FEATURES = 512
GAIN_RELU = math.sqrt(2)
GAIN_HEAD = 0.01
GAIN_VALUE_LAYER = 0.1


def nature_convs(in_channels: int, *, leaky: bool = False) -> list[nn.Module]:
    """conv 32 8×8 s4 → conv 64 4×4 s2 → conv 64 3×3 s1 → flatten (3136 features on 84×84).

    `leaky` swaps ReLU for LeakyReLU, as RND's target and predictor networks do."""

    def act() -> nn.Module:
        return nn.LeakyReLU() if leaky else nn.ReLU()

    return [
        nn.Conv2d(in_channels, 32, 8, stride=4),
        act(),
        nn.Conv2d(32, 64, 4, stride=2),
        act(),
        nn.Conv2d(64, 64, 3, stride=1),
        act(),
        nn.Flatten(),
    ]


def nature_trunk(in_channels: int, out_features: int = RND_FEATURES, *, leaky: bool = False) -> nn.Sequential:
    """The Nature convs → FC `out_features` (no activation after it): RND's target network."""
    return nn.Sequential(*nature_convs(in_channels, leaky=leaky), nn.Linear(CONV_FEATURES, out_features))


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal weights, zero biases: the PPO/RND Atari initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


class PixelTrunk(nn.Module):
    """uint8 frame stack [*, 4, 84, 84] → 448 ReLU features (scales by 1/255 itself)."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            *nature_convs(in_channels),
            nn.Linear(CONV_FEATURES, TRUNK_WIDTH),
            nn.ReLU(),
            nn.Linear(TRUNK_WIDTH, HIDDEN),
            nn.ReLU(),
        )
        orthogonal_init(self.net, GAIN_RELU)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = pixels.shape[:-3]
        x = pixels.reshape(-1, *pixels.shape[-3:]).float().div_(255.0)
        return self.net(x).reshape(*batch, HIDDEN)


def policy_head(n_actions: int) -> nn.Sequential:
    """FC 448 → ReLU → FC n_actions, both layers with gain 0.01 (model.py lines 114–118, 143–146)."""
    head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_actions))
    orthogonal_init(head, GAIN_HEAD)
    return head


class TwoValueHeads(nn.Module):
    """Extrinsic and intrinsic state values, each [*, 1], from one shared 448-unit layer with a
    residual connection (model.py line 156: ``critic_ext(extra_layer(x) + x)``)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.extrinsic = nn.Linear(HIDDEN, 1)
        self.intrinsic = nn.Linear(HIDDEN, 1)
        orthogonal_init(self.layer, GAIN_VALUE_LAYER)
        orthogonal_init(self.extrinsic, GAIN_HEAD)
        orthogonal_init(self.intrinsic, GAIN_HEAD)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layer(hidden) + hidden
        return self.extrinsic(h), self.intrinsic(h)


def make_atari_actor_critic(n_actions: int, in_channels: int = 4) -> ActorValueOperator:
    """TorchRL actor-critic: ``pixels`` → ``hidden`` → policy (``logits``, ``action``,
    ``action_log_prob``) and values (``state_value`` extrinsic, ``state_value_int`` intrinsic).

    `get_policy_operator()` gives the actor (trunk + policy head, for collectors and retention
    losses), `get_value_operator()` the critic, both over the one shared trunk.
    """
    trunk = TensorDictModule(PixelTrunk(in_channels), in_keys=["pixels"], out_keys=["hidden"])
    actor = ProbabilisticActor(
        TensorDictModule(policy_head(n_actions), in_keys=["hidden"], out_keys=["logits"]),
        in_keys=["logits"],
        out_keys=["action"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    values = TensorDictModule(
        TwoValueHeads(), in_keys=["hidden"], out_keys=["state_value", "state_value_int"]
    )
    return ActorValueOperator(trunk, actor, values)
