"""The shared fine-tuning lifecycle: a new algorithm writes only its collection and its update.

A minimal REINFORCE learner (Williams 1992: ∇J = E[∇ log π(a|s) · G]) built on ``FineTuning`` gets
π* loading, the teacher, retention (EWC prepared from π* once, its term in the loss), the frame
budget, the non-finite guard and the export from the base class, as README "Adding an algorithm"
describes."""

from __future__ import annotations

import torch
from lightning import Trainer
from tensordict import TensorDictBase
from torchrl.collectors import Collector

from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.retention import EWC
from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.lifecycle import FineTuning
from lit_rl.training.settings import Budget, Collection, Evaluation, Export


class Reinforce(FineTuning):
    """Monte-Carlo policy gradient on whole [envs, time] batches, returns to the batch's end."""

    def make_collector(self, remaining_frames: int):
        c = self.collection
        env = self.scenario.make_env(c.num_envs, c.start, self._env_seed(), training=True)
        frames = c.num_envs * c.rollout_length
        total = -(-remaining_frames // frames) * frames
        return Collector(
            env,
            self.policy["actor"],
            frames_per_batch=frames,
            total_frames=total,
            auto_register_policy_transforms=False,
        ), None

    def learn(self, batch: TensorDictBase, terms: dict) -> None:
        reward = batch["next", "reward"].squeeze(-1)
        returns = reward.flip(-1).cumsum(-1).flip(-1)
        dist = self.policy["actor"].get_dist(batch.select(*self.policy["actor"].in_keys).clone())
        log_prob = dist.log_prob(batch["action"])
        losses = {"loss_objective": -(log_prob * (returns - returns.mean())).mean()}
        losses.update(self.retention_losses(batch.reshape(-1)))
        self.optimise(losses, terms)

    def configure_optimizers(self):
        return torch.optim.SGD(self.policy.behaviour_parameters().values(), lr=0.5)


def test_an_algorithm_written_as_collection_and_update_gets_the_whole_lifecycle(tmp_path):
    torch.manual_seed(0)
    scenario = AppleRetrieval(length=4)
    start = tmp_path / "pi.pt"
    save_policy(start, scenario.make_policy().modules(), scenario.describe())
    model = Reinforce(
        scenario,
        pretrained=str(start),
        teacher=None,
        seed=0,
        collection=Collection(num_envs=4, rollout_length=20, teacher_frames=80),
        budget=Budget(frames=400),
        evaluation=Evaluation(episodes=2),
        export=Export(policy=str(tmp_path / "out.pt")),
        retention=[EWC(coef=1.0, fisher_states=32, fisher_batch=16)],
    )
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model)
    assert int(model.env_frames) == 400  # the budget, counted in frames by the base class
    assert bool(model.retention["ewc"].prepared)  # EWC prepared once from π*
    assert model.method_name == "ewc"
    exported = scenario.make_policy().modules()
    load_policy(tmp_path / "out.pt", exported, scenario.describe())  # π*'s export, same layout
    trained = model.policy.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in exported.state_dict().items())
    teacher = model.teacher.state_dict()
    start_state = scenario.make_policy().modules()
    load_policy(start, start_state, scenario.describe())
    assert all(torch.equal(v, start_state["actor"].state_dict()[k]) for k, v in teacher.items())
