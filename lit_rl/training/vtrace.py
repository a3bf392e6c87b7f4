"""V-trace targets against the behaviour policy's stored log-probabilities (IMPALA, eq. 1).

Espeholt et al. 2018 ("IMPALA", arXiv:1802.01561, §4.1) correct n-step targets for data collected
by an older policy μ with truncated importance weights ρ_t = min(ρ̄, π(a_t|s_t)/μ(a_t|s_t)) and
c_t = min(c̄, π(a_t|s_t)/μ(a_t|s_t)):

    v_s = V(s_s) + Σ_{t≥s} γ^{t−s} (Π_{i=s}^{t−1} c_i) ρ_t (r_t + γ V(s_{t+1}) − V(s_t))
    A_s = ρ_s (r_s + γ v_{s+1} − V(s_s))

The recursion is TorchRL's ``vtrace_advantage_estimate`` (torchrl.objectives.value.functional),
the one its ``VTrace`` estimator calls. ``VTrace`` itself is not used: its actor call
(``_call_actor_net`` in torchrl/objectives/value/advantages.py, TorchRL 0.14) scores a *freshly
sampled* action (or the mode, outside random exploration) instead of the action the behaviour
policy took, so π/μ compares two different actions and is not 1 even with no lag at all. Here π is
the log-probability of the stored ``action``. TorchRL's V-trace has no λ (c_t is not multiplied by
one), so it is the λ = 1 estimator; with no lag (π = μ, so ρ_t = c_t = 1 for ρ̄, c̄ ≥ 1) its targets
and advantages are GAE's with λ = 1.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from torchrl.objectives.value.functional import vtrace_advantage_estimate

#: log-ratios below this count as unclipped: the same weights replay a frame to ≈1e-6
FLOAT_NOISE = 1e-4


class BehaviourVTrace:
    """Writes ``advantage`` and ``value_target`` into an [envs, time] batch by V-trace.

    Args:
        gamma: discount.
        rho_bar, c_bar: truncation levels ρ̄ (the fixed point: ρ̄ = 1 targets a policy between μ and
            π) and c̄ (how far traces reach); IMPALA and Sample Factory use 1 for both.
        log_prob_key: where the collector stored μ(a_t|s_t) (the PPO loss's ``sample_log_prob``).
    """

    def __init__(self, gamma: float, rho_bar: float, c_bar: float, log_prob_key):
        self.gamma, self.rho_bar, self.c_bar, self.log_prob_key = gamma, rho_bar, c_bar, log_prob_key

    @torch.no_grad()
    def __call__(self, batch: TensorDictBase, actor, next_value: torch.Tensor) -> float:
        """Targets from the batch's ``state_value`` and ``next_value`` (V of every next state);
        returns the share of frames whose importance weight was clipped at ρ̄ (beyond float noise:
        the replay and the collection pass may differ by a few ulps)."""
        log_pi = target_log_prob(actor, batch)
        value = batch["state_value"]
        log_mu = batch[self.log_prob_key].reshape(value.shape)
        advantage, target = vtrace_advantage_estimate(
            self.gamma,
            log_pi.reshape(value.shape),
            log_mu,
            value,
            next_value,
            batch["next", "reward"].to(value.dtype),
            batch["next", "done"],
            batch["next", "terminated"],
            rho_thresh=self.rho_bar,
            c_thresh=self.c_bar,
            time_dim=-2,
        )
        batch.set("advantage", advantage)
        batch.set("value_target", target)
        excess = log_pi.reshape(value.shape) - log_mu - math.log(self.rho_bar)
        return (excess > FLOAT_NOISE).float().mean().item()


def target_log_prob(actor, batch: TensorDictBase) -> torch.Tensor:
    """log π(a_t|s_t) of the stored actions under the current weights, [envs, time]. A recurrent
    actor replays each row from its stored first state, as the PPO loss does; the batch is not
    written to (the actor's pass writes into a shallow copy)."""
    dist = actor.get_dist(batch.copy())
    return dist.log_prob(batch["action"])
