"""Environments stepped in collector worker processes (``model.collection.workers``)."""

from __future__ import annotations

import pytest
import torch

from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.ppo import PPOFineTuning
from lit_rl.training.settings import Budget, Collection


def test_workers_keep_rows_per_env_and_receive_new_weights():
    """Two workers give [num_envs, rollout_length] batches (each row one environment's
    trajectory, as GAE needs), and the next batch is collected with the weights the learner has
    after the previous one: a policy changed to always go right is followed at once."""
    torch.manual_seed(0)
    model = PPOFineTuning(
        AppleRetrieval(),
        collection=Collection(start="far", num_envs=8, rollout_length=10, workers=2),
        budget=Budget(frames=400),
    )
    batches = model.train_dataloader()
    first = next(batches)
    assert first.shape == (8, 10)
    assert 0.2 < first["action"].float().mean() < 0.8  # π is near 50/50 at initialisation
    linear = model.policy["actor"].module[0].module.linear
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(50.0)  # action 1 with probability 1
    second = next(batches)
    assert second.shape == (8, 10) and bool((second["action"] == 1).all())
    for batch in (first, second):  # within a row, each step starts where the one before ended
        done = batch["next", "done"][:, :-1].squeeze(-1)
        assert torch.equal(batch["next", "observation"][:, :-1][~done], batch["observation"][:, 1:][~done])
    batches.close()


def test_workers_must_divide_the_environments():
    with pytest.raises(ValueError, match="must be >= 1 and divide model.collection.num_envs=8"):
        PPOFineTuning(AppleRetrieval(), collection=Collection(num_envs=8, workers=3))
