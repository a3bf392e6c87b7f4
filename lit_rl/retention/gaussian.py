"""Retention for SAC's Gaussian actor (paper §2 and the robotic sequence, §5b of our notes).

The actor (``lit_rl.models.sac_mlp.GaussianActorNet``) maps a state to the mean μ and standard
deviation σ of a Gaussian over pre-tanh actions; the action is its tanh. Every method here reads
only the actor (``ctx.actor`` / the behaviour parameters): the critics are never regularised.

- ``GaussianEWC``: coef · Σ_i F_i (θ_i − θ*_i)², with the Fisher of the Gaussian policy
  F_i = E_s Σ_j [ ((∂μ_j/∂θ_i) / σ_j)² + 2 ((∂σ_j/∂θ_i) / σ_j)² ], clipped below at 1e-5.
- ``GaussianBC``: coef · E_{s∼π*'s buffer} KL(π*(·|s) ‖ π_θ(·|s)), on a fixed memory of π*'s
  states labelled once by π*.
- ``EpisodicMemory``: no loss term; π*'s transitions seed the replay buffer and are never
  overwritten (the SAC trainer keeps them, ``SACFineTuning``).

The Gaussian KL is taken between the pre-tanh Gaussians: tanh is a bijection, so it equals the KL
between the squashed action distributions.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch.func import functional_call, grad, vmap

from lit_rl.retention.anchored import AnchoredPenalty
from lit_rl.retention.base import RetentionContext, RetentionMethod
from lit_rl.scenarios.base import ActorCritic

#: the keys a Gaussian actor reads
STATE_KEYS = ("observation", "stage")


def gaussian_net(actor) -> tuple[torch.nn.Module, str]:
    """The (observation, stage) → (μ, σ) network inside a TorchRL actor and its name prefix."""
    net = actor.module[0].module
    for name, module in actor.named_modules():
        if module is net:
            return net, f"{name}." if name else ""
    raise ValueError("the Gaussian network is not part of the actor")


def gaussian_kl(teacher_loc, teacher_scale, loc, scale) -> torch.Tensor:
    """KL(N(μ*, σ*²) ‖ N(μ, σ²)) summed over action dimensions, per state:
    Σ_j log(σ_j/σ*_j) + (σ*_j² + (μ*_j − μ_j)²) / (2σ_j²) − 1/2 (paper §2's KL(π* ‖ π_θ))."""
    terms = (
        torch.log(scale / teacher_scale)
        + (teacher_scale**2 + (teacher_loc - loc) ** 2) / (2 * scale**2)
        - 0.5
    )
    return terms.sum(-1)


def gaussian_fisher(
    net: torch.nn.Module, states: TensorDictBase, batch_size: int = 128
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of a Gaussian policy, per parameter of ``net`` (named as inside it):

        F_i = mean_s Σ_j [ ((∂μ_j(s)/∂θ_i) / σ_j(s))² + 2 ((∂σ_j(s)/∂θ_i) / σ_j(s))² ]

    the Fisher information of N(μ_θ(s), diag σ_θ(s)²) with respect to θ (paper §5b; for one
    dimension, I(μ) = 1/σ² and I(σ) = 2/σ²). Per-state Jacobian rows come from torch.func
    (``vmap`` over states of ``grad`` of each output μ_j / σ_j, with σ_j held fixed in the
    denominator), so no per-state Python loop runs.
    """
    params = {k: v.detach() for k, v in net.named_parameters()}
    observation, stage = states["observation"], states["stage"]

    def output(p, obs, stg, which: int, j: int):
        loc, scale = functional_call(net, p, (obs.unsqueeze(0), stg.unsqueeze(0)))
        value = (loc, scale)[which][0, j]
        return value / scale[0, j].detach()

    with torch.no_grad():
        action_dim = net(observation[:1], stage[:1])[0].shape[-1]
    totals = {k: torch.zeros_like(v) for k, v in params.items()}
    for obs, stg in zip(observation.split(batch_size), stage.split(batch_size), strict=True):
        for which, weight in ((0, 1.0), (1, 2.0)):
            for j in range(action_dim):
                grads = vmap(grad(output), in_dims=(None, 0, 0, None, None))(params, obs, stg, which, j)
                for k in totals:
                    totals[k] += weight * (grads[k] ** 2).sum(0)
    return {k: v / len(observation) for k, v in totals.items()}


class GaussianEWC(AnchoredPenalty):
    """EWC for SAC's actor: coef · Σ_i F_i (θ_i − θ*_i)², F the Gaussian-policy Fisher of π*
    (``gaussian_fisher``) on ``fisher_states`` states of π*'s buffer, clipped below at
    ``fisher_min`` (paper: coef 100, 2,560 states, 1e-5)."""

    name = "ewc"

    def __init__(
        self,
        coef: float = 100.0,
        fisher_states: int = 2560,
        fisher_min: float = 1e-5,
        fisher_batch: int = 128,
    ):
        super().__init__(coef)
        if fisher_states < 1 or fisher_batch < 1 or fisher_min < 0:
            raise ValueError("ewc.fisher_states and ewc.fisher_batch must be >= 1, ewc.fisher_min >= 0")
        self.fisher_states, self.fisher_min, self.fisher_batch = fisher_states, fisher_min, fisher_batch

    def fill_weights(self, ctx: RetentionContext) -> None:
        net, prefix = gaussian_net(ctx.teacher)
        states = ctx.pretraining_states(self.fisher_states)
        for name, value in gaussian_fisher(net, states, self.fisher_batch).items():
            if prefix + name in self._names:
                self.weight(prefix + name).copy_(value.clamp(min=self.fisher_min))


class GaussianBC(RetentionMethod):
    """Behavioural-cloning replay for SAC: coef · E_{s∼M} KL(π*(·|s) ‖ π_θ(·|s)) (paper §2).

    M is ``memory_states`` states drawn once from π*'s buffer and labelled once by π* (μ*, σ*),
    all kept in buffers, so a resumed run replays the same memory; each update draws
    ``batch_size`` of them (paper: coef 1, 10k states).
    """

    name = "bc"

    def __init__(self, coef: float = 1.0, memory_states: int = 10_000, batch_size: int = 128):
        super().__init__(coef)
        if memory_states < 1 or batch_size < 1:
            raise ValueError("bc.memory_states and bc.batch_size must be >= 1")
        self.memory_states, self.batch_size = memory_states, batch_size

    def attach(self, policy: ActorCritic) -> None:
        net, _ = gaussian_net(policy["actor"])
        obs_dim = next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).in_features
        action_dim = net.heads.out_features // 2
        n = self.memory_states
        self.register_buffer("memory_observation", torch.zeros(n, obs_dim))
        self.register_buffer("memory_stage", torch.zeros(n, dtype=torch.long))
        self.register_buffer("memory_loc", torch.zeros(n, action_dim))
        self.register_buffer("memory_scale", torch.ones(n, action_dim))
        self.register_buffer("memory_size", torch.tensor(0))

    def prepare_from(self, ctx: RetentionContext) -> None:
        states = ctx.pretraining_states(self.memory_states)
        n = len(states)
        net, _ = gaussian_net(ctx.teacher)
        with torch.no_grad():
            loc, scale = net(states["observation"], states["stage"])
        self.memory_observation[:n] = states["observation"]
        self.memory_stage[:n] = states["stage"]
        self.memory_loc[:n], self.memory_scale[:n] = loc, scale
        self.memory_size.fill_(n)

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor:
        index = torch.randint(int(self.memory_size), (self.batch_size,), device=self.memory_loc.device)
        net, _ = gaussian_net(ctx.actor)
        loc, scale = net(self.memory_observation[index], self.memory_stage[index])
        kl = gaussian_kl(self.memory_loc[index], self.memory_scale[index], loc, scale)
        return self.coef * kl.mean()


class EpisodicMemory(RetentionMethod):
    """Episodic memory (off-policy only): ``memory_size`` of π*'s transitions from its replay
    buffer go into the fine-tuning replay buffer before training and are never overwritten;
    updates sample them uniformly together with the online transitions (paper: 10k in a 100k
    buffer). It adds no loss term.

    The trainer asks ``replay_memory()`` once, when its buffer is still empty; the transitions
    then live in the buffer (checkpointed with it), not here.
    """

    name = "em"

    def __init__(self, memory_size: int = 10_000):
        super().__init__(0.0)
        if memory_size < 1:
            raise ValueError(f"em.memory_size must be >= 1, got {memory_size}")
        self.memory_size = memory_size
        self._transitions: TensorDictBase | None = None

    def prepare_from(self, ctx: RetentionContext) -> None:
        self._transitions = ctx.pretraining_states(self.memory_size)

    def replay_memory(self) -> TensorDictBase | None:
        transitions, self._transitions = self._transitions, None
        return transitions
