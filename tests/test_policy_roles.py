"""The policy contract (``ActorCritic``): which parameters are behaviour, which the value function's
own, which the scenario keeps fixed, and that optimiser groups, retention penalties and freezing
read those roles. NetHack's ScaledNet is the case that matters: its actor module holds the whole
network, value head included, and its encoders are fixed during fine-tuning."""

import copy

import pytest
import torch

from lit_rl.retention import EWC, Freeze, L2Init, RetentionContext
from lit_rl.scenarios.apple import AppleRetrieval
from lit_rl.scenarios.nethack import NetHack
from lit_rl.training.ppo import Optimisation, PPOFineTuning


@pytest.fixture
def nethack_policy():
    torch.manual_seed(0)
    return NetHack(size="tiny").make_policy().modules()


def _net(policy):
    return policy["actor"].module[0].net


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_scaled_net_roles_split_the_shared_trunk(nethack_policy):
    """Behaviour = LSTM and policy head; value = the value head alone; fixed = the encoders (the
    FC layers included). Every parameter has exactly one role."""
    net = _net(nethack_policy)
    behaviour = _ids(nethack_policy.behaviour_parameters().values())
    value = _ids(nethack_policy.value_parameters().values())
    fixed = _ids(p for m in net.encoder_modules() for p in m.parameters())
    assert value == _ids(net.value.parameters())
    assert _ids(net.lstm.parameters()) <= behaviour and _ids(net.policy.parameters()) <= behaviour
    assert not behaviour & value and not behaviour & fixed and not value & fixed
    assert behaviour | value | fixed == _ids(nethack_policy.parameters())


def test_retention_penalty_sends_no_gradient_to_the_value_head(nethack_policy):
    """L2-init (and EWC, which shares its buffers) covers the behaviour parameters only: after
    every parameter moved away from θ*, the value head's gradient is still None."""
    teacher = copy.deepcopy(nethack_policy["actor"]).requires_grad_(False)
    method = L2Init(coef=1.0)
    method.attach(nethack_policy)
    behaviour = nethack_policy.behaviour_parameters()
    ctx = RetentionContext(nethack_policy["actor"], teacher, behaviour, pretraining_states=None)
    method.prepare(ctx)
    with torch.no_grad():
        for p in nethack_policy.parameters():
            p.add_(0.1)
    method.loss(ctx, None).backward()
    net = _net(nethack_policy)
    assert all(p.grad is None for p in net.value.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.lstm.parameters())
    ewc = EWC()
    ewc.attach(nethack_policy)
    anchors = [name for name, _ in ewc.named_buffers() if name.startswith("anchor__")]
    assert len(anchors) == len(behaviour) and not any(".value." in n.replace("__", ".") for n in anchors)


def test_freeze_actor_leaves_the_value_head_training(nethack_policy):
    freeze = Freeze(modules=["actor"])
    freeze.attach(nethack_policy)
    freeze.on_env_frames(0)
    net = _net(nethack_policy)
    assert all(p.requires_grad for p in net.value.parameters())
    assert not any(p.requires_grad for p in net.lstm.parameters())


def test_thaw_restores_only_what_freeze_froze(nethack_policy):
    """At ``unfreeze_at`` the behaviour parameters train again; the scenario's fixed encoders stay
    frozen (one freezing mechanism, so a thaw cannot wake them)."""
    freeze = Freeze(modules=["actor"], unfreeze_at=10)
    freeze.attach(nethack_policy)
    freeze.on_env_frames(0)
    freeze.on_env_frames(10)
    net = _net(nethack_policy)
    assert all(p.requires_grad for p in net.lstm.parameters())
    assert not any(p.requires_grad for m in net.encoder_modules() for p in m.parameters())


@pytest.mark.parametrize("scenario", [NetHack(size="tiny"), AppleRetrieval()], ids=["nethack", "apple"])
def test_critic_lr_applies_to_the_value_parameters(scenario):
    """Two optimiser groups: behaviour at ``lr``, the value function's own at ``critic_lr`` (on a
    shared trunk too); the fixed encoders are in neither."""
    torch.manual_seed(0)
    model = PPOFineTuning(scenario, optimisation=Optimisation(lr=1e-4, critic_lr=0.123))
    behaviour, value = model.configure_optimizers().param_groups
    assert behaviour["lr"] == 1e-4 and value["lr"] == 0.123
    assert _ids(value["params"]) == _ids(model.policy.value_parameters().values()) != set()
    assert _ids(behaviour["params"]) == _ids(model.policy.behaviour_parameters().values())
    trainable = _ids(p for p in model.policy.parameters() if p.requires_grad)
    assert _ids(behaviour["params"]) | _ids(value["params"]) == trainable
