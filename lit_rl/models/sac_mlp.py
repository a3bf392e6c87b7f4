"""SAC's actor and critic for multi-stage tasks: one MLP trunk, one output head per stage.

The paper's robotic networks (Wołczyk et al. 2024, §5b of our notes; the Continual World recipe):
4 hidden layers × 256 units, LeakyReLU, LayerNorm after the first layer only, and a separate output
head for every stage, chosen by the stage id. Separate heads let fine-tuning learn hammer and push
without writing over the heads π* uses in peg-unplug-side and push-wall: forgetting then comes only
through the shared trunk, which is what the retention methods protect.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import TensorSpec
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

#: log σ of the actor's pre-tanh Gaussian is clamped to this range (the Continual World SAC's)
LOG_STD_RANGE = (-20.0, 2.0)


def trunk(in_features: int, hidden: int = 256, depth: int = 4) -> nn.Sequential:
    """``depth`` hidden layers of ``hidden`` units: Linear → LayerNorm → LeakyReLU, then
    (Linear → LeakyReLU) × (depth − 1)."""
    layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.LeakyReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class StageHeads(nn.Module):
    """``num_stages`` linear heads of ``out_features`` each, evaluated as one matrix product; the
    row's own stage selects its head (the others get no gradient from that row)."""

    def __init__(self, hidden: int, out_features: int, num_stages: int):
        super().__init__()
        self.out_features, self.num_stages = out_features, num_stages
        self.linear = nn.Linear(hidden, out_features * num_stages)

    def forward(self, features: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        out = self.linear(features).unflatten(-1, (self.num_stages, self.out_features))
        index = stage.long().reshape(*out.shape[:-2], 1, 1).expand(*out.shape[:-2], 1, self.out_features)
        return out.gather(-2, index).squeeze(-2)


class GaussianActorNet(nn.Module):
    """(observation, stage) → (loc, scale) of the pre-tanh Gaussian of each action dimension."""

    def __init__(self, obs_dim: int, action_dim: int, num_stages: int, hidden: int = 256, depth: int = 4):
        super().__init__()
        self.trunk = trunk(obs_dim, hidden, depth)
        self.heads = StageHeads(hidden, 2 * action_dim, num_stages)

    def forward(self, observation: torch.Tensor, stage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_std = self.heads(self.trunk(observation), stage).chunk(2, dim=-1)
        return loc, log_std.clamp(*LOG_STD_RANGE).exp()


class QNet(nn.Module):
    """(observation, action, stage) → Q(s, a) from the stage's own head."""

    def __init__(self, obs_dim: int, action_dim: int, num_stages: int, hidden: int = 256, depth: int = 4):
        super().__init__()
        self.trunk = trunk(obs_dim + action_dim, hidden, depth)
        self.heads = StageHeads(hidden, 1, num_stages)

    def forward(self, observation: torch.Tensor, action: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(torch.cat([observation, action], -1)), stage)


def make_gaussian_actor(net: GaussianActorNet, action_spec: TensorSpec) -> ProbabilisticActor:
    """TorchRL actor: ``loc``/``scale`` → a tanh-squashed Gaussian on [−1, 1] (SAC's policy);
    deterministic mode (evaluation) is the squashed mean."""
    module = TensorDictModule(net, in_keys=["observation", "stage"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=["action"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "safe_tanh": False},
        return_log_prob=False,
    )


def make_qvalue(net: QNet) -> ValueOperator:
    return ValueOperator(net, in_keys=["observation", "action", "stage"])
