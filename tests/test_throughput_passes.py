"""Issue 14, point 1: no redundant ScaledNet passes, with losses and advantages unchanged.

The reference is the straightforward full recomputation: the critic re-run on every frame and on
every next frame (each from its stored LSTM state) feeding TorchRL's GAE, the PPO loss running the
actor's replay (encoders included) and the critic on every frame's stored state, and kickstarting
replaying the actor once more. Both are computed here on the same collected batch with the same
weights.

The trainer's previous GAE (TorchRL's ``GAE`` with the critic as value network) differs from that
reference at episode-start frames: TorchRL marks the next state of an ``is_init`` frame as
``is_init`` too (meant for critics that replay sequences), so our one-step critic zeroed the LSTM
state of those next states. Stored values do not have that error; the test pins where it was.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from lightning import Trainer

from lit_rl.models.nethack_policy import CORE_KEY, FEATURES_KEY, PassCounter
from lit_rl.models.policy_io import save_policy
from lit_rl.retention import Kickstarting
from lit_rl.retention.base import policy_logits, teacher_student_kl
from lit_rl.retention.distillation import CURRENT_LOGITS
from lit_rl.scenarios.nethack import NetHack
from lit_rl.training.ppo import Advantage, Optimisation, PPOFineTuning, PPOLoss
from lit_rl.training.ppo_loss import make_ppo_loss
from lit_rl.training.settings import Budget, Collection, Evaluation

ENVS, STEPS = 4, 16
SETTINGS = dict(
    collection=Collection(num_envs=ENVS, rollout_length=STEPS),
    optimisation=Optimisation(minibatch_size=2 * STEPS, lr=1e-3, max_grad_norm=4.0),
    advantage=Advantage(gamma=0.99, gae_lambda=0.95),
    loss=PPOLoss(
        clip_epsilon=0.1, value_clip=1.0, normalize_returns=True, critic_coef=1.0, entropy_coef=0.001
    ),
    evaluation=Evaluation(every_frames=10**9),
    budget=Budget(),
)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A randomly initialised π* (the passes do not depend on what it learned)."""
    torch.manual_seed(0)
    scenario = NetHack(size="tiny", max_episode_steps=7)
    path = tmp_path_factory.mktemp("pi") / "nethack.pt"
    save_policy(path, scenario.make_policy().modules(), scenario.describe())
    return path


def module(teacher_file, ks: bool = False, episode_steps: int = 7, **overrides: dict) -> PPOFineTuning:
    """The test trainer; ``overrides`` change keys of a settings group, e.g. ``budget={"frames": 128}``."""
    # 7-step episodes: rows of 16 steps hold time-limit truncations, so bootstraps inside rows count
    scenario = NetHack(size="tiny", max_episode_steps=episode_steps)
    settings = {group: replace(value, **overrides.get(group, {})) for group, value in SETTINGS.items()}
    retention = [Kickstarting()] if ks else []
    return PPOFineTuning(scenario, pretrained=str(teacher_file), retention=retention, **settings)


def collect(model: PPOFineTuning):
    """One [envs, time] batch from the trainer's own collector, as training_step receives it."""
    model.train()
    model.on_fit_start()  # the retention context
    collector, _ = model.make_collector(ENVS * STEPS)
    try:
        return next(iter(collector)).clone()
    finally:
        collector.shutdown()


def reference_batch(batch):
    """The batch without anything the collection pass stored for learning."""
    return batch.exclude("state_value", FEATURES_KEY, ("next", "state_value"))


@pytest.mark.parametrize("ks", [False, True])
def test_advantages_and_losses_equal_the_full_recomputation(teacher_file, one_torch_thread, ks):
    torch.manual_seed(1)
    model = module(teacher_file, ks=ks)
    batch = collect(model)
    assert "state_value" in batch.keys() and FEATURES_KEY in batch.keys()
    truncated = batch["next", "truncated"][:, :-1]
    assert truncated.any(), "the test needs time-limit truncations inside rows"

    reference = reference_batch(batch).clone()
    critic = model.policy["critic"]
    with torch.no_grad():
        # the critic on every frame and every next frame, each from its own stored state
        reference.set("state_value", critic(reference.clone())["state_value"])
        reference.set(("next", "state_value"), critic(reference["next"].clone())["state_value"])
        model.stored_value_advantage(reference)
        model.compute_advantage(batch)  # stored values + bootstraps
        previous = reference_batch(batch).clone()
        model.gae(previous)  # the trainer's previous GAE
    torch.testing.assert_close(batch["advantage"], reference["advantage"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch["value_target"], reference["value_target"], rtol=1e-5, atol=1e-5)
    wrong = ~torch.isclose(previous["advantage"], reference["advantage"], rtol=1e-5, atol=1e-5)
    assert wrong.any() and (wrong <= batch["is_init"]).all()  # only episode-start frames differed

    loss = model.loss
    actor = model.policy["actor"]
    settings = dict(clip_epsilon=loss.clip_epsilon, critic_coef=loss.critic_coef,
                    entropy_coef=model.entropy_coef, value_clip=loss.value_clip,
                    normalize_returns=loss.normalize_returns)  # fmt: skip
    # the reference loss: the actor replays (encoders included), the critic re-runs every stored state
    full = make_ppo_loss(actor, critic, **settings)
    shared = make_ppo_loss(actor, model.ppo_loss.critic_network, **settings)
    ref_minibatch = reference.clone()
    ref_minibatch.set("state_value", batch["state_value"])  # GAE wrote it before: old values
    with PassCounter() as ref_passes:
        ref_losses = full(ref_minibatch)
    minibatch = batch.clone()
    with PassCounter() as passes:
        losses = shared(minibatch)
    keys = [key for key in ref_losses.keys() if key.startswith("loss_")]
    assert set(keys) >= {"loss_objective", "loss_critic"}
    for key in keys:
        torch.testing.assert_close(losses[key], ref_losses[key], rtol=1e-5, atol=1e-6)
    assert CORE_KEY not in batch.keys() and CURRENT_LOGITS in minibatch.keys()
    # one trunk pass without encoders against a replay with encoders plus a critic step per frame
    assert (passes.core, passes.encoder) == (batch.numel(), 0)
    assert (ref_passes.core, ref_passes.encoder) == (2 * batch.numel(), 2 * batch.numel())

    if ks:
        # π* read the student's fixed features: its logits equal its own full pass on each frame
        own = model.scenario.teacher_probe(model.teacher)
        assert not own.reads_features
        with torch.no_grad():
            flat = reference_batch(batch).reshape(-1).exclude("teacher_logits")
            own_logits = own(flat)["teacher_logits"].reshape(batch["teacher_logits"].shape)
        torch.testing.assert_close(batch["teacher_logits"], own_logits, rtol=1e-5, atol=1e-5)
        method = model.retention["ks"]
        with PassCounter() as ks_passes:
            reused = method.loss(model._context, minibatch)
        expected = method.coef * teacher_student_kl(
            batch["teacher_logits"], policy_logits(actor, reference_batch(batch))
        )
        torch.testing.assert_close(reused, expected, rtol=1e-5, atol=1e-6)
        assert ks_passes.core == 0


def _fit_passes(model: PPOFineTuning, budget: int) -> tuple[PassCounter, int]:
    """Passes of a whole fit (collection included), and how many bootstrap states GAE needed."""
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    bootstraps = []
    original = model.compute_advantage

    def counting(batch):
        done, terminated = batch["next", "done"], batch["next", "terminated"]
        bootstraps.append(int((done & ~terminated)[:, :-1].sum() + (~terminated[:, -1]).sum()))
        original(batch)

    model.compute_advantage = counting
    with PassCounter() as passes:
        trainer.fit(model)
    assert int(model.env_frames) == budget
    return passes, sum(bootstraps)


@pytest.mark.parametrize("ks", [False, True])
def test_a_training_run_makes_two_passes_per_frame_three_with_ks(teacher_file, one_torch_thread, ks):
    """Collection (1) + PPO (1) (+ π* beside the student, 1), plus the critic on the bootstrap
    states: each row's last next state and the states truncated episodes were cut at."""
    budget = 3 * ENVS * STEPS
    model = module(teacher_file, ks=ks, budget={"frames": budget}, episode_steps=1000)
    passes, bootstraps = _fit_passes(model, budget)
    assert 0 < bootstraps <= 2 * budget // STEPS  # about one per row
    probe = ENVS * (2 if ks else 1)  # TorchRL's Collector runs its policy once when it is built
    assert passes.core == (3 if ks else 2) * budget + bootstraps + probe, passes.core / budget
    # the encoders run once per frame (π* reads the student's fixed features) and on bootstraps
    assert passes.encoder == budget + bootstraps + ENVS


def test_teacher_encodes_for_itself_when_its_encoders_differ(teacher_file, tmp_path, one_torch_thread):
    """π* shares the student's features only if its encoders compute the same function."""
    torch.manual_seed(5)
    scenario = NetHack(size="tiny", max_episode_steps=7)
    other = tmp_path / "other.pt"
    save_policy(other, scenario.make_policy().modules(), scenario.describe())
    same = module(teacher_file, ks=True)
    different = PPOFineTuning(scenario, pretrained=str(teacher_file), teacher=str(other),
                              retention=[Kickstarting()], **SETTINGS)  # fmt: skip
    assert same._collection_policy().module[1].reads_features
    assert not different._collection_policy().module[1].reads_features
