"""States of the pre-training distribution, for methods that replay or estimate from it.

When a scenario has no recorded dataset, π*'s own rollouts in the subspace it was trained on stand in
for it (the paper's EWC and BC read the pre-training data). The states sit in a TorchRL replay buffer
and are sampled uniformly.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.scenarios.base import Scenario


class TeacherRolloutStates:
    """A replay buffer of ``frames`` states visited by π* from the scenario's pre-training starts."""

    def __init__(self, scenario: Scenario, teacher, frames: int, num_envs: int, seed: int):
        env = scenario.make_env(num_envs, scenario.pretraining_subspace, seed)
        steps = max(1, frames // num_envs)
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            rollout = env.rollout(steps, teacher, break_when_any_done=False).reshape(-1)
        keys = [k for k in rollout.keys() if k not in ("next", "logits")]
        self.buffer = ReplayBuffer(storage=LazyTensorStorage(rollout.numel()))
        self.buffer.extend(rollout.select(*keys))

    def __call__(self, n: int) -> TensorDictBase:
        return self.buffer.sample(n)
