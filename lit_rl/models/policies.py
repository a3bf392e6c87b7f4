"""Small policy and value networks, wrapped as TorchRL actor and critic modules.

Every actor writes ``logits`` before sampling ``action``: retention losses read those logits to
compare the fine-tuned policy with the pre-trained one on any batch of states.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import TensorSpec
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator


class LogisticPolicyNet(nn.Module):
    """The paper's two-action logistic policy π(right | o) = σ(w·o + b), as logits [0, w·o + b]."""

    def __init__(self, in_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        right = self.linear(observation)
        return torch.cat([torch.zeros_like(right), right], dim=-1)


def make_actor(net: nn.Module, in_keys: list[str], action_spec: TensorSpec) -> ProbabilisticActor:
    """Categorical actor that records ``logits`` and the sample's log-probability for PPO."""
    module = TensorDictModule(net, in_keys=in_keys, out_keys=["logits"])
    return ProbabilisticActor(
        module,
        in_keys=["logits"],
        out_keys=["action"],
        spec=action_spec,
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )


def make_mlp_policy_net(in_features: int, num_actions: int, hidden: int, depth: int) -> nn.Module:
    """An MLP alternative to the logistic policy (``policy: mlp``)."""
    return MLP(
        in_features=in_features,
        out_features=num_actions,
        num_cells=[hidden] * depth,
        activation_class=nn.Tanh,
    )


def make_critic(in_key: str, in_features: int, hidden: int = 64) -> ValueOperator:
    """State-value network V(s) for GAE; never regularised by retention (paper, section 2)."""
    net = MLP(in_features=in_features, out_features=1, num_cells=[hidden, hidden])
    return ValueOperator(net, in_keys=[in_key])
