"""Knowledge-retention methods (paper §2): L2-init, EWC, BC replay, kickstarting and freezing.

Most checks use the paper's two-action logistic policy π(right | o) = σ(w·o + b), whose logits are
[0, w·o + b], because every quantity (penalty, Fisher, KL, cross-entropy) has a closed form there.
"""

import copy
import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Categorical

from lit_rl.models.policies import LogisticPolicyNet, make_actor
from lit_rl.models.policy_io import save_policy
from lit_rl.retention import (
    EWC,
    BehaviouralCloningReplay,
    Freeze,
    Kickstarting,
    L2Init,
    RetentionContext,
    teacher_student_kl,
)
from lit_rl.scenarios.apple import AppleRetrieval
from lit_rl.scenarios.base import ActorCritic, TeacherLogits
from lit_rl.training.ppo import PPOFineTuning
from lit_rl.training.settings import Collection

WEIGHT = "module.0.module.linear.weight"
BIAS = "module.0.module.linear.bias"


# --- helpers -------------------------------------------------------------------------------------
def _logistic_actor(w: float = 0.0, b: float = 0.0):
    actor = make_actor(LogisticPolicyNet(), ["observation"], Categorical(2))
    _set_logistic(actor, w, b)
    return actor


def _set_logistic(actor, w: float, b: float) -> None:
    linear = actor.module[0].module.linear
    with torch.no_grad():
        linear.weight.fill_(w)
        linear.bias.fill_(b)


def _states(obs: torch.Tensor, **extra) -> TensorDict:
    obs = obs.reshape(-1, 1).float()
    return TensorDict(observation=obs, **extra, batch_size=[obs.shape[0]])


def _fixed_source(states: TensorDict):
    """A pre-training state source that always returns the first n of ``states`` (deterministic)."""
    return lambda n: states[:n].clone()


def _no_states(n: int):
    raise AssertionError("pretraining_states must not be read here")


def _policy(actor) -> ActorCritic:
    """The logistic actor with a separate critic: every actor parameter is behaviour."""
    return ActorCritic(actor, torch.nn.Linear(3, 1))


def _attached(method, actor):
    method.attach(_policy(actor))
    return method


def _ctx(actor, teacher=None, states=_no_states) -> RetentionContext:
    if teacher is None:
        teacher = copy.deepcopy(actor)
    behaviour = dict(actor.named_parameters())
    return RetentionContext(actor=actor, teacher=teacher, behaviour=behaviour, pretraining_states=states)


def _bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-state KL(Bern(p) ‖ Bern(q)), written out by hand."""
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def _anchored(kind: str, actor):
    if kind == "l2":
        return _attached(L2Init(coef=0.7), actor)
    return _attached(EWC(coef=0.7, fisher=kind, fisher_states=512, fisher_batch=128), actor)


ANCHORED = ["l2", "per_sample", "batch_mean"]


def _pretrained_path(tmp_path, scenario: AppleRetrieval) -> str:
    """Export a π* whose actor is not at its zero initialisation, so θ* is non-trivial."""
    torch.manual_seed(0)
    policy = scenario.make_policy().modules()
    _set_logistic(policy["actor"], -3.0, 1.0)
    path = tmp_path / "pi_star.pt"
    save_policy(path, policy, scenario.describe())
    return str(path)


def _finetuning(tmp_path, *methods) -> PPOFineTuning:
    scenario = AppleRetrieval()
    return PPOFineTuning(
        scenario,
        pretrained=_pretrained_path(tmp_path, scenario),
        retention=list(methods),
        collection=Collection(num_envs=8, teacher_frames=256),
    )


def _grads(loss, params):
    return torch.autograd.grad(loss, list(params), allow_unused=True)


# --- L2-init and EWC -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ANCHORED)
def test_anchored_penalty_is_zero_with_zero_gradient_at_theta_star(kind):
    """At θ = θ* (student equal to the teacher after prepare) the penalty and its gradient are 0."""
    torch.manual_seed(0)
    actor = _logistic_actor(1.3, -0.4)
    states = _states(torch.randn(512))
    method = _anchored(kind, actor)
    ctx = _ctx(actor, states=_fixed_source(states))
    method.prepare(ctx)
    loss = method.loss(ctx, states)
    assert loss.item() == 0.0
    grads = _grads(loss, actor.parameters())
    assert all(g is not None and torch.equal(g, torch.zeros_like(g)) for g in grads)


@pytest.mark.parametrize("kind", ANCHORED)
def test_anchored_penalty_after_perturbation_is_coef_weighted_squared_distance(kind):
    """After moving θ away from θ*, loss = coef·Σ w(θ−θ*)² > 0 and its gradient is 2·coef·w(θ−θ*)."""
    torch.manual_seed(0)
    actor = _logistic_actor(1.3, -0.4)
    states = _states(torch.randn(512))
    method = _anchored(kind, actor)
    ctx = _ctx(actor, states=_fixed_source(states))
    method.prepare(ctx)
    _set_logistic(actor, 1.3 + 0.5, -0.4 - 0.25)
    delta = {WEIGHT: torch.tensor([[0.5]]), BIAS: torch.tensor([-0.25])}
    loss = method.loss(ctx, states)
    expected = 0.7 * sum((method.weight(n) * d**2).sum() for n, d in delta.items())
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected)
    grads = dict(zip([WEIGHT, BIAS], _grads(loss, [actor.get_parameter(WEIGHT), actor.get_parameter(BIAS)])))
    for name, d in delta.items():
        torch.testing.assert_close(grads[name], 2 * 0.7 * method.weight(name) * d)


@pytest.mark.parametrize("kind", ANCHORED)
def test_anchor_is_taken_from_teacher_not_student(kind):
    """θ* is read from π* (the teacher), so a student that already moved is penalised at once."""
    torch.manual_seed(0)
    teacher = _logistic_actor(0.9, 0.2)
    actor = _logistic_actor(-0.5, 1.0)
    states = _states(torch.randn(256))
    method = _anchored(kind, actor)
    ctx = _ctx(actor, teacher, states=_fixed_source(states))
    method.prepare(ctx)
    assert torch.equal(method.anchor(WEIGHT), torch.tensor([[0.9]]))
    assert torch.equal(method.anchor(BIAS), torch.tensor([0.2]))
    assert method.loss(ctx, states).item() > 0


def test_per_sample_fisher_matches_closed_form_for_logistic_policy():
    """per_sample Fisher of σ(w·o+b): F_b = mean_s p(1−p), F_w = mean_s p(1−p)·o² (a ∼ π*, not argmax).

    Actions are sampled, so the estimate is compared with a 3% tolerance on 30,000 states; an
    empirical Fisher with argmax actions would give mean (1−p)² etc., far outside that tolerance.
    """
    torch.manual_seed(0)
    w, b = 1.5, 0.8
    obs = torch.tensor([-1.0, 0.5, 2.0]).repeat(10_000)
    teacher = _logistic_actor(w, b)
    actor = _logistic_actor(0.0, 0.0)  # the Fisher is π*'s, whatever the student is
    method = _attached(EWC(fisher="per_sample", fisher_states=len(obs), fisher_batch=4096), actor)
    method.prepare(_ctx(actor, teacher, states=_fixed_source(_states(obs))))
    p = torch.sigmoid(w * obs + b)
    f_b = (p * (1 - p)).mean()
    f_w = (p * (1 - p) * obs**2).mean()
    torch.testing.assert_close(method.weight(BIAS), f_b.reshape(1), rtol=0.03, atol=0)
    torch.testing.assert_close(method.weight(WEIGHT), f_w.reshape(1, 1), rtol=0.03, atol=0)


def test_batch_mean_fisher_matches_hand_computation():
    """batch_mean Fisher = mean over minibatches of (∂ mean_s CE(logits, argmax logits)/∂θ)², exactly.

    For logits [0, z], z = w·o + b and target a = 1[z > 0]: ∂CE/∂b = p − a, ∂CE/∂w = (p − a)·o.
    """
    torch.manual_seed(0)
    w, b, batch, chunks = 1.5, -0.3, 64, 4
    obs = torch.randn(batch * chunks, generator=torch.Generator().manual_seed(1))
    teacher = _logistic_actor(w, b)
    actor = _logistic_actor(0.0, 0.0)
    method = _attached(EWC(fisher="batch_mean", fisher_states=len(obs), fisher_batch=batch), actor)
    method.prepare(_ctx(actor, teacher, states=_fixed_source(_states(obs))))
    z = (w * obs + b).double().reshape(chunks, batch)
    o = obs.double().reshape(chunks, batch)
    residual = torch.sigmoid(z) - (z > 0).double()
    f_b = (residual.mean(1) ** 2).mean()
    f_w = ((residual * o).mean(1) ** 2).mean()
    torch.testing.assert_close(method.weight(BIAS).double(), f_b.reshape(1), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(method.weight(WEIGHT).double(), f_w.reshape(1, 1), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("fisher", ["per_sample", "batch_mean"])
def test_finetuning_prepares_ewc_with_either_fisher_estimate(tmp_path, fisher):
    """PPOFineTuning.on_fit_start prepares EWC from its frozen teacher copy with both Fisher kinds.

    The module's teacher has requires_grad=False; each estimate must still produce a Fisher.
    """
    torch.manual_seed(0)
    model = _finetuning(tmp_path, EWC(fisher=fisher, fisher_states=256, fisher_batch=64))
    model.on_fit_start()
    ewc = model.retention["ewc"]
    assert bool(ewc.prepared)
    assert torch.equal(ewc.anchor(WEIGHT), torch.tensor([[-3.0]]))
    assert ewc.weight(BIAS).item() > 0


def test_retention_gradient_never_reaches_the_critic(tmp_path):
    """L2, EWC, BC and KS losses give actor parameters a gradient and critic parameters none.

    Buffers of the anchored penalties cover only actor parameters, too.
    """
    torch.manual_seed(0)
    model = _finetuning(
        tmp_path,
        L2Init(coef=1.0),
        EWC(fisher="per_sample", fisher_states=256, fisher_batch=64),
        BehaviouralCloningReplay(coef=1.0, batch_size=64),
        Kickstarting(),
    )
    model.on_fit_start()
    _set_logistic(model.policy["actor"], -2.0, 0.5)  # move away from π* so every term has a slope
    batch = model.scenario.teacher_probe(model.teacher)(model._pretraining_states(64))
    actor_params = list(model.policy["actor"].parameters())
    critic_params = list(model.policy["critic"].parameters())
    for name, method in model.retention.items():
        loss = method.loss(model._context, batch)
        grads = _grads(loss, actor_params + critic_params)
        actor_grads, critic_grads = grads[: len(actor_params)], grads[len(actor_params) :]
        assert all(g is None for g in critic_grads), name
        assert any(g is not None and g.abs().sum() > 0 for g in actor_grads), name
    for name in ("l2", "ewc"):
        buffers = [k for k, _ in model.retention[name].named_buffers()]
        assert not any("critic" in k for k in buffers)
        assert len([k for k in buffers if k.startswith("anchor__")]) == len(actor_params)


# --- KL, BC and KS -------------------------------------------------------------------------------
def test_teacher_student_kl_is_nonnegative_and_zero_for_equal_policies():
    """KL(π* ‖ π_θ) ≥ 0 on every state, and it and its gradient vanish when the policies match."""
    torch.manual_seed(0)
    teacher = torch.randn(200, 5) * 3
    student = torch.randn(200, 5) * 3
    per_state = torch.stack([teacher_student_kl(teacher[i : i + 1], student[i : i + 1]) for i in range(200)])
    assert (per_state >= 0).all()
    assert (per_state > 0).all()
    same = teacher.clone().requires_grad_(True)
    kl = teacher_student_kl(teacher, same)
    assert abs(kl.item()) < 1e-6
    (grad,) = torch.autograd.grad(kl, same)
    assert grad.abs().max() < 1e-6
    # adding a per-state constant to the logits does not change the policy
    assert abs(teacher_student_kl(teacher, teacher + 4.0).item()) < 1e-5


def test_teacher_student_kl_direction_is_teacher_to_student():
    """teacher_student_kl(p, q) = KL(p ‖ q) = Σ p log(p/q), not the reverse, on asymmetric pairs."""
    p = torch.tensor([[0.90, 0.09, 0.01], [0.98, 0.01, 0.01]])
    q = torch.tensor([[0.30, 0.30, 0.40], [0.50, 0.25, 0.25]])
    forward = (p * (p / q).log()).sum(-1).mean()
    reverse = (q * (q / p).log()).sum(-1).mean()
    assert abs(forward - reverse) > 0.1
    torch.testing.assert_close(teacher_student_kl(p.log(), q.log()), forward)


def _collected(obs: torch.Tensor, teacher) -> TensorDict:
    """Rollout frames as the collector stores them with kickstarting: π* wrote ``teacher_logits``."""
    return TeacherLogits(teacher)(_states(obs))


def test_kickstarting_loss_is_coef_times_kl_on_rollout_states():
    """KS = coef · mean_s KL(π*(s) ‖ π_θ(s)) over the batch it is given (current rollouts).

    It never reads pre-training states and sends no gradient into the teacher.
    """
    torch.manual_seed(0)
    teacher = _logistic_actor(2.0, 1.0)
    actor = _logistic_actor(-1.0, 0.3)
    method = Kickstarting(coef=0.6)
    obs = torch.linspace(-1.5, 1.5, 31)
    ctx = _ctx(actor, teacher)
    loss = method.loss(ctx, _collected(obs, teacher))
    expected = 0.6 * _bernoulli_kl(torch.sigmoid(2.0 * obs + 1.0), torch.sigmoid(-obs + 0.3)).mean()
    reverse = 0.6 * _bernoulli_kl(torch.sigmoid(-obs + 0.3), torch.sigmoid(2.0 * obs + 1.0)).mean()
    assert abs(expected - reverse) > 1e-2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in actor.parameters())


def test_kickstarting_loss_is_zero_when_student_equals_teacher():
    """KS vanishes (with zero gradient) while π_θ = π*."""
    actor = _logistic_actor(0.7, -0.2)
    ctx = _ctx(actor)
    loss = Kickstarting().loss(ctx, _collected(torch.linspace(-1, 1, 11), ctx.teacher))
    assert abs(loss.item()) < 1e-7
    loss.backward()
    assert all(p.grad.abs().max() < 1e-7 for p in actor.parameters())


def test_bc_loss_is_coef_times_kl_on_pretraining_states():
    """BC = coef · mean KL(π* ‖ π_θ) over states drawn from the pre-training data, not the batch."""
    torch.manual_seed(0)
    teacher = _logistic_actor(2.0, 1.0)
    actor = _logistic_actor(-1.0, 0.3)
    replay = torch.linspace(0.5, 2.0, 40)
    method = BehaviouralCloningReplay(coef=2.0, batch_size=40)
    ctx = _ctx(actor, teacher, states=_fixed_source(_states(replay)))
    rollout = _states(torch.full((16,), -3.0))
    loss = method.loss(ctx, rollout)
    p_star, p = torch.sigmoid(2.0 * replay + 1.0), torch.sigmoid(-replay + 0.3)
    torch.testing.assert_close(loss, 2.0 * _bernoulli_kl(p_star, p).mean())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    same = _logistic_actor(2.0, 1.0)
    assert abs(method.loss(_ctx(same, teacher, ctx.pretraining_states), rollout).item()) < 1e-7


def test_bc_action_target_is_cross_entropy_to_recorded_action():
    """BC with target='action' is coef · mean_s −log π_θ(a_s | s) for the recorded actions a_s.

    The teacher's distribution plays no part, so changing the teacher leaves the loss unchanged.
    """
    torch.manual_seed(0)
    obs = torch.linspace(-1.0, 1.0, 32)
    actions = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(3))
    source = _fixed_source(_states(obs, action=actions))
    actor = _logistic_actor(1.2, -0.4)
    method = BehaviouralCloningReplay(coef=1.5, target="action", batch_size=32)
    loss = method.loss(_ctx(actor, _logistic_actor(0.0, 0.0), source), _states(obs[:4]))
    p_right = torch.sigmoid(1.2 * obs - 0.4)
    log_lik = torch.where(actions == 1, p_right.log(), (1 - p_right).log())
    torch.testing.assert_close(loss, -1.5 * log_lik.mean())
    other_teacher = method.loss(_ctx(actor, _logistic_actor(-5.0, 3.0), source), _states(obs[:4]))
    torch.testing.assert_close(other_teacher, loss)


# --- KS coefficient schedule ---------------------------------------------------------------------
def _floor_step(c0: float, decay: float, c_min: float) -> int:
    return math.ceil(math.log(c_min / c0) / math.log(decay))


def test_ks_coefficient_follows_geometric_decay():
    """After k optimiser steps the KS coefficient is max(0.75·0.99998^k, 0.33) (relative 1e-5)."""
    method = Kickstarting(coef=0.75, decay=0.99998, coef_min=0.33)
    done = 0
    for k in (1, 10, 100, 1_000, 10_000, 30_000):
        for _ in range(k - done):
            method.after_optimizer_step()
        done = k
        expected = max(0.75 * 0.99998**k, 0.33)
        assert method.coef.item() == pytest.approx(expected, rel=1e-5), f"after {k} steps"


def test_ks_coefficient_reaches_floor_at_expected_update():
    """The coefficient is still above 0.33 after k*−1 steps and at the floor after k* ≈ 41,050.

    k* = ceil(log(0.33/0.75)/log(0.99998)); it then stays at the floor.
    """
    k_star = _floor_step(0.75, 0.99998, 0.33)
    assert 41_000 < k_star < 41_100
    method = Kickstarting(coef=0.75, decay=0.99998, coef_min=0.33)
    floor = torch.tensor(0.33)
    for _ in range(k_star - 1):
        method.after_optimizer_step()
    assert method.coef > floor, f"floor reached before update {k_star}"
    assert method.coef.item() == pytest.approx(0.75 * 0.99998 ** (k_star - 1), rel=1e-6)
    method.after_optimizer_step()
    assert method.coef.item() == pytest.approx(0.33, abs=1e-7)
    for _ in range(100):
        method.after_optimizer_step()
    assert method.coef.item() == pytest.approx(0.33, abs=1e-7)


def test_ks_coefficient_survives_state_dict_round_trip():
    """The decayed coefficient is restored by load_state_dict into a fresh module and keeps decaying."""
    cfg = dict(coef=0.75, decay=0.99, coef_min=0.1)
    method = Kickstarting(**cfg)
    for _ in range(37):
        method.after_optimizer_step()
    restored = Kickstarting(**cfg)
    assert restored.coef.item() == pytest.approx(0.75)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.coef, method.coef)
    method.after_optimizer_step()
    restored.after_optimizer_step()
    assert torch.equal(restored.coef, method.coef)
    assert restored.coef.item() == pytest.approx(0.75 * 0.99**38, rel=1e-5)


def test_retention_state_survives_finetuning_state_dict_round_trip(tmp_path):
    """A PPOFineTuning state_dict carries the KS coefficient and EWC's θ*, Fisher and prepared flag.

    A freshly built module that loads it has the same coefficient, and its EWC is not prepared again.
    """
    torch.manual_seed(0)

    def methods():
        return Kickstarting(coef=0.75, decay=0.999, coef_min=0.1), EWC(fisher_states=256, fisher_batch=64)

    model = _finetuning(tmp_path, *methods())
    model.on_fit_start()
    for _ in range(250):
        model.retention["ks"].after_optimizer_step()
    saved = copy.deepcopy(model.state_dict())
    fresh = _finetuning(tmp_path / "other", *methods())
    assert fresh.retention["ks"].coef.item() == pytest.approx(0.75)
    fresh.load_state_dict(saved)
    assert fresh.retention["ks"].coef.item() == pytest.approx(0.75 * 0.999**250, rel=1e-5)
    ewc, old = fresh.retention["ewc"], model.retention["ewc"]
    assert bool(ewc.prepared)
    for name in (WEIGHT, BIAS):
        assert torch.equal(ewc.weight(name), old.weight(name))
        assert torch.equal(ewc.anchor(name), old.anchor(name))
    ewc.prepare(_ctx(fresh.policy["actor"], _logistic_actor(9.0, 9.0)))  # must not recompute
    assert torch.equal(ewc.weight(BIAS), old.weight(BIAS))


# --- restoring a prepared method -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["l2", "per_sample"])
def test_restored_method_is_prepared_and_does_not_recompute(kind):
    """A method loaded from a prepared one's state_dict is prepared; prepare() then changes nothing.

    The teacher is changed before the second prepare: a recomputation would move θ* and the Fisher
    (as the control, a fresh method prepared from the changed teacher, shows).
    """
    torch.manual_seed(0)
    actor = _logistic_actor(1.0, 0.5)
    states = _fixed_source(_states(torch.randn(512)))
    prepared = _anchored(kind, actor)
    prepared.prepare(_ctx(actor, states=states))
    restored = _anchored(kind, actor)
    assert not bool(restored.prepared)
    restored.load_state_dict(prepared.state_dict())
    assert bool(restored.prepared)
    changed = _logistic_actor(-2.0, 3.0)
    restored.prepare(_ctx(actor, changed, states=_no_states))
    control = _anchored(kind, actor)
    control.prepare(_ctx(actor, changed, states=states))
    for name in (WEIGHT, BIAS):
        assert torch.equal(restored.anchor(name), prepared.anchor(name))
        assert torch.equal(restored.weight(name), prepared.weight(name))
        assert not torch.equal(control.anchor(name), prepared.anchor(name))
        if kind != "l2":
            assert not torch.allclose(control.weight(name), prepared.weight(name))


# --- freezing ------------------------------------------------------------------------------------
def _mlp_policy():
    torch.manual_seed(0)
    return AppleRetrieval(policy="mlp", hidden=8).make_policy().modules()


def _train(policy, optimiser, steps: int = 5) -> None:
    """A few real optimiser steps on a loss that involves every actor and critic parameter."""
    batch = _states(torch.linspace(-0.1, 0.1, 16), state_features=torch.randn(16, 3))
    for _ in range(steps):
        optimiser.zero_grad()
        logits = policy["actor"].get_dist(batch.clone()).logits
        value = policy["critic"](batch.clone())["state_value"]
        loss = (logits[:, 1] - 3.0).pow(2).mean() + (value - 1.0).pow(2).mean()
        loss.backward()
        optimiser.step()


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_freeze_keeps_frozen_parameters_bit_identical_under_adam():
    """Frozen actor parameters are bit-identical after Adam steps on all parameters; others move."""
    policy = _mlp_policy()
    freeze = Freeze(modules=["actor"])
    freeze.attach(policy)
    freeze.on_env_frames(0)
    assert freeze.coef.item() == 1.0
    actor0, critic0 = _snapshot(policy["actor"]), _snapshot(policy["critic"])
    _train(policy, torch.optim.Adam(policy.parameters(), lr=0.05))
    for name, p in policy["actor"].named_parameters():
        assert not p.requires_grad
        assert torch.equal(p, actor0[name]), name
    assert all(not torch.equal(p, critic0[n]) for n, p in policy["critic"].named_parameters())


def test_freeze_deeper_prefix_freezes_only_matching_parameters():
    """A prefix such as ``critic.module.0`` freezes that layer only; the rest keeps training."""
    policy = _mlp_policy()
    freeze = Freeze(modules=["critic.module.0"])
    freeze.attach(policy)
    freeze.on_env_frames(0)
    before = _snapshot(policy)
    _train(policy, torch.optim.Adam(policy.parameters(), lr=0.05))
    for name, p in policy.named_parameters():
        if name.startswith("critic.module.0."):
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name


def test_freeze_thaws_at_unfreeze_frame():
    """Parameters stay frozen below ``unfreeze_at`` env frames, thaw at it, and then train."""
    policy = _mlp_policy()
    freeze = Freeze(modules=["actor"], unfreeze_at=1000)
    freeze.attach(policy)
    optimiser = torch.optim.Adam(policy.parameters(), lr=0.05)
    before = _snapshot(policy["actor"])
    for frames in (0, 500, 999):
        freeze.on_env_frames(frames)
        assert all(not p.requires_grad for p in policy["actor"].parameters()), frames
        assert freeze.coef.item() == 1.0
        _train(policy, optimiser, steps=2)
    assert all(torch.equal(p, before[n]) for n, p in policy["actor"].named_parameters())
    freeze.on_env_frames(1000)
    assert all(p.requires_grad for p in policy["actor"].parameters())
    assert freeze.coef.item() == 0.0
    _train(policy, optimiser, steps=3)
    assert all(not torch.equal(p, before[n]) for n, p in policy["actor"].named_parameters())


@pytest.mark.parametrize("modules", [["encoder"], ["act"]])
def test_freeze_unknown_module_prefix_raises(modules):
    """A prefix that matches no parameter name (on a '.' boundary) is rejected with ValueError."""
    policy = _mlp_policy()
    with pytest.raises(ValueError, match="match no trainable parameter"):
        Freeze(modules=modules).attach(policy)


def test_bc_settings_must_be_positive():
    """A zero chunk length or batch is refused when the settings are read, in one line."""
    with pytest.raises(ValueError, match=r"bc.batch_size \(256\) and bc.seq_length \(0\) must be >= 1"):
        BehaviouralCloningReplay(seq_length=0)
