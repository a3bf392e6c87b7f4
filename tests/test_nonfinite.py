"""A non-finite loss skips that update; a run of them stops training with a clear message."""

import pytest
import torch
from tensordict import TensorDict

from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.ppo import PPOFineTuning
from lit_rl.training.settings import Budget, Collection


class ConstantLoss(torch.nn.Module):
    """Stands in for the PPO loss module: returns a fixed (non-finite) objective."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, batch):
        return TensorDict(loss_objective=torch.tensor(self.value), batch_size=[])


def module_with_loss(value: float) -> PPOFineTuning:
    module = PPOFineTuning(
        AppleRetrieval(), collection=Collection(start="far"), budget=Budget(max_nonfinite_updates=3)
    )
    module.ppo_loss = ConstantLoss(value)
    return module


def test_nonfinite_update_is_skipped_and_counted():
    module = module_with_loss(float("nan"))
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    module._update(TensorDict(batch_size=[4]), terms={})
    assert int(module.nonfinite_updates) == 1
    assert all(torch.equal(before[k], v) for k, v in module.policy.state_dict().items())


def test_a_run_of_nonfinite_losses_stops_training():
    module = module_with_loss(float("inf"))
    for _ in range(2):
        module._update(TensorDict(batch_size=[4]), terms={})
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite losses"):
        module._update(TensorDict(batch_size=[4]), terms={})
