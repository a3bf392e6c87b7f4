"""Penalties that pull the actor's weights towards θ*: L2-init and EWC (paper §2)."""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from torch.func import functional_call, grad, vmap

from lit_rl.retention.base import (
    RetentionContext,
    RetentionMethod,
    buffer_name,
    policy_logits,
)
from lit_rl.scenarios.base import ActorCritic


class AnchoredPenalty(RetentionMethod):
    """Σ_i w_i (θ_i − θ*_i)² over the behaviour parameters, scaled by ``coef``.

    θ* and the weights w are buffers shaped like those parameters, so they are allocated when the
    method is attached (checkpoints can then restore them) and filled by ``prepare``. The value
    head and the scenario's fixed parts are not behaviour parameters: they get no penalty.
    """

    def attach(self, policy: ActorCritic) -> None:
        for name, p in policy.behaviour_parameters().items():
            self.register_buffer(f"anchor__{buffer_name(name)}", torch.zeros_like(p))
            self.register_buffer(f"weight__{buffer_name(name)}", torch.ones_like(p))
        self._names = list(policy.behaviour_parameters())

    def anchor(self, name: str) -> torch.Tensor:
        return getattr(self, f"anchor__{buffer_name(name)}")

    def weight(self, name: str) -> torch.Tensor:
        return getattr(self, f"weight__{buffer_name(name)}")

    def prepare_from(self, ctx: RetentionContext) -> None:
        teacher = dict(ctx.teacher.named_parameters())
        for name in self._names:
            self.anchor(name).copy_(teacher[name].detach())
        self.fill_weights(ctx)

    def fill_weights(self, ctx: RetentionContext) -> None:
        """Unweighted by default (L2-init)."""

    def penalty(self, behaviour: dict[str, torch.nn.Parameter]) -> torch.Tensor:
        terms = [
            (self.weight(name) * (behaviour[name] - self.anchor(name)) ** 2).sum() for name in self._names
        ]
        return torch.stack(terms).sum()

    def loss(self, ctx: RetentionContext, batch) -> torch.Tensor:
        return self.coef * self.penalty(ctx.behaviour)


class L2Init(AnchoredPenalty):
    """L2 towards the pre-trained weights: coef · Σ_i (θ_i − θ*_i)² (the paper's L2-init baseline)."""

    name = "l2"


class EWC(AnchoredPenalty):
    """Elastic weight consolidation: coef · Σ_i F_i (θ_i − θ*_i)², F the diagonal Fisher of π*.

    Args:
        coef: λ. The paper's NetHack λ is 2·10⁷ in code and 2·10⁶ in its text.
        fisher: ``per_sample`` is the textbook E_s E_{a∼π*}[(∂ log π*(a|s)/∂θ)²]; ``batch_mean`` is
            the paper code's coarse empirical Fisher: the squared gradient of each minibatch's mean
            cross-entropy to π*'s own argmax action, averaged over minibatches.
        fisher_states: pre-training states the Fisher is estimated on.
        fisher_batch: states per minibatch of that estimate.
    """

    name = "ewc"

    def __init__(
        self,
        coef: NonNegativeFloat = 1.0,
        fisher: Literal["per_sample", "batch_mean"] = "per_sample",
        fisher_states: PositiveInt = 4096,
        fisher_batch: PositiveInt = 256,
    ):
        super().__init__(coef)
        if fisher_states < 1 or fisher_batch < 1:
            raise ValueError(
                f"ewc.fisher_states ({fisher_states}) and ewc.fisher_batch ({fisher_batch}) must be >= 1"
            )
        self.fisher, self.fisher_states, self.fisher_batch = fisher, fisher_states, fisher_batch

    def fill_weights(self, ctx: RetentionContext) -> None:
        states = ctx.pretraining_states(self.fisher_states)
        estimate = per_sample_fisher if self.fisher == "per_sample" else batch_mean_fisher
        for name, value in estimate(ctx.teacher, states, self.fisher_batch).items():
            if name in self._names:
                self.weight(name).copy_(value)


def per_sample_fisher(actor, states, batch_size: int) -> dict[str, torch.Tensor]:
    """E_s E_{a∼π(·|s)} [(∇_θ log π(a|s))²], with per-state gradients from torch.func.vmap.

    Works on the network that produces the logits (the actor's first TensorDictModule), called
    functionally on plain tensors so vmap sees no TensorDict bookkeeping.
    """
    logits_module = actor.module[0]
    net, in_keys = logits_module.module, logits_module.in_keys
    prefix = _parameter_prefix(actor, net)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def log_prob(p, action, *inputs):
        logits = functional_call(net, p, tuple(x.unsqueeze(0) for x in inputs))[0]
        return torch.log_softmax(logits, -1).gather(-1, action.reshape(1)).squeeze(-1)

    totals = {k: torch.zeros_like(v) for k, v in params.items()}
    for chunk in states.split(batch_size):
        inputs = [chunk[k] for k in in_keys]
        with torch.no_grad():
            actions = torch.distributions.Categorical(logits=net(*inputs)).sample()
        dims = (None, 0) + (0,) * len(inputs)
        grads = vmap(grad(log_prob), in_dims=dims)(params, actions, *inputs)
        for k in totals:
            totals[k] += (grads[k] ** 2).sum(0)
    return {prefix + k: v / len(states) for k, v in totals.items()}


def _parameter_prefix(actor: torch.nn.Module, net: torch.nn.Module) -> str:
    """The name under which ``net`` sits inside ``actor`` (e.g. ``module.0.module.``)."""
    for name, module in actor.named_modules():
        if module is net:
            return f"{name}." if name else ""
    raise ValueError("the logits network is not part of the actor")


def batch_mean_fisher(actor, states, batch_size: int) -> dict[str, torch.Tensor]:
    """Paper code's estimate: mean over minibatches of (∇_θ mean_s CE(π(s), argmax π(s)))².

    The teacher's parameters are frozen, so gradients are taken with respect to detached copies
    swapped in through ``functional_call``.
    """
    params = {k: v.detach().clone().requires_grad_(True) for k, v in actor.named_parameters()}
    named = {f"actor.{k}": v for k, v in params.items()}
    totals = {k: torch.zeros_like(v) for k, v in params.items()}
    chunks = states.split(batch_size)
    for chunk in chunks:
        with torch.enable_grad():
            logits = functional_call(_LogitsOf(actor), named, (chunk,))
            loss = torch.nn.functional.cross_entropy(logits, logits.detach().argmax(-1))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for k, g in zip(params, grads):
            if g is not None:
                totals[k] += g.detach() ** 2
    return {k: v / len(chunks) for k, v in totals.items()}


class _LogitsOf(torch.nn.Module):
    """Maps a state TensorDict to the actor's logits, so ``functional_call`` can swap parameters."""

    def __init__(self, actor):
        super().__init__()
        self.actor = actor

    def forward(self, states):
        return policy_logits(self.actor, states)
