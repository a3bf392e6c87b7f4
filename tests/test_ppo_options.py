"""The paper's APPO settings on top of clipped PPO: value clipping, return normalisation, and a
no-learning start (paper §3: value clip 1.0, returns normalised, 25M frames before learning)."""

from __future__ import annotations

import torch
from lightning import Trainer

from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.ppo import Optimisation, PPOFineTuning, PPOLoss
from lit_rl.training.settings import Budget, Collection


def fit(budget: Budget) -> PPOFineTuning:
    torch.manual_seed(0)
    model = PPOFineTuning(AppleRetrieval(), seed=0, budget=budget,
                          collection=Collection(start="far", num_envs=8, rollout_length=10),
                          optimisation=Optimisation(minibatch_size=40))  # fmt: skip
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model)
    return model


def collected(model: PPOFineTuning):
    """Flat frames of a short rollout with GAE's advantage, value target and state value."""
    with torch.no_grad():
        td = model.scenario.make_env(16, "far", seed=0).rollout(5, model.policy["actor"])
        model.compute_advantage(td)
    return td.reshape(-1)


def test_no_update_before_learning_starts():
    """Frames up to ``learning_starts_frames`` only collect: the weights stay bit-identical; the
    first batch after it updates them. The frame count covers the whole budget either way."""
    torch.manual_seed(0)
    initial = PPOFineTuning(AppleRetrieval(), collection=Collection(start="far")).policy.state_dict()
    waiting = fit(Budget(frames=160, learning_starts=160))
    assert int(waiting.env_frames) == 160
    assert all(torch.equal(initial[k], v) for k, v in waiting.policy.state_dict().items())
    learning = fit(Budget(frames=160, learning_starts=80))
    assert any(not torch.equal(initial[k], v) for k, v in learning.policy.state_dict().items())


def test_normalised_returns_compare_values_in_return_units():
    """With ``normalize_returns`` the critic term is critic_coef · mean(((V − G) / σ)²) for the
    running std σ of the returns G seen so far (an unclipped value, here), and the running
    statistics are part of the checkpointed state."""
    model = PPOFineTuning(
        AppleRetrieval(),
        collection=Collection(start="far"),
        loss=PPOLoss(normalize_returns=True, critic_coef=0.5),
    )
    td = collected(model)
    td["value_target"] = td["value_target"] * 50.0 + 7.0  # returns on a much larger scale
    loss = model.ppo_loss(td.clone())["loss_critic"]
    target = td["value_target"]
    sigma = target.var(unbiased=False).clamp(min=1e-5).sqrt()
    value = model.policy["critic"](td.clone())["state_value"]
    expected = 0.5 * (((value - target.mean()) / sigma - (target - target.mean()) / sigma) ** 2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    assert "ppo_loss.value_norm.mean" in model.state_dict()


def test_value_clip_limits_the_critic_step():
    """With ``value_clip`` the loss reports the share of clipped value predictions (TorchRL)."""
    model = PPOFineTuning(AppleRetrieval(), collection=Collection(start="far"), loss=PPOLoss(value_clip=1e-3))
    td = collected(model)
    td["state_value"] = td["state_value"] + 1.0  # the collected values sit 1 away from the critic's
    out = model.ppo_loss(td)
    assert out["value_clip_fraction"].item() == 1.0


def test_checkpoints_load_across_return_normalisation_settings():
    """A checkpoint from a run without ``normalize_returns`` loads into one with it (fresh
    statistics) and the other way round (statistics dropped)."""
    plain = PPOFineTuning(AppleRetrieval(), collection=Collection(start="far"))
    normalised = PPOFineTuning(
        AppleRetrieval(), collection=Collection(start="far"), loss=PPOLoss(normalize_returns=True)
    )
    for source, target in ((plain, normalised), (normalised, plain)):
        checkpoint = {"state_dict": source.state_dict()}
        target.on_load_checkpoint(checkpoint)
        target.load_state_dict(checkpoint["state_dict"])  # strict, as Lightning loads it
