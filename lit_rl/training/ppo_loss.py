"""The clipped PPO objective every on-policy trainer builds (plain PPO/APPO and PPO + RND).

TorchRL's ``MAPPOLoss`` is ``ClipPPOLoss`` plus a value-normaliser hook for the critic term; with one
agent and no excluded dimensions it is plain clipped PPO (Schulman et al. 2017, eq. 7):

    L = −E[min(r_t Â_t, clip(r_t, 1 ± ε) Â_t)] + c_v · E[(V(s_t) − V_t^target)²] − c_H · E[H(π(·|s_t))]

with advantages normalised per minibatch. ``value_norm=None`` leaves it unchanged.
"""

from __future__ import annotations

from torch import nn
from torchrl.modules import RunningValueNorm
from torchrl.objectives.multiagent import MAPPOLoss


def entropy_coef_in_use(
    entropy_coef: float, entropy_coef_with_retention: float | None, retention: bool
) -> float:
    """The paper switches the entropy bonus off (0) once any retention method is active."""
    if retention and entropy_coef_with_retention is not None:
        return entropy_coef_with_retention
    return entropy_coef


def make_ppo_loss(
    actor: nn.Module,
    critic: nn.Module,
    *,
    clip_epsilon: float,
    critic_coef: float,
    entropy_coef: float,
    value_clip: float | None = None,
    normalize_returns: bool = False,
) -> MAPPOLoss:
    """TorchRL's clipped PPO loss with the project's fixed choices (l2 critic loss, per-minibatch
    advantage normalisation); ``normalize_returns`` compares values in units of a running
    mean/std of the returns (TorchRL ``RunningValueNorm``)."""
    return MAPPOLoss(
        actor,
        critic,
        clip_epsilon=clip_epsilon,
        clip_value=value_clip,
        value_norm=RunningValueNorm(shape=1) if normalize_returns else None,
        entropy_bonus=entropy_coef > 0,
        entropy_coeff=entropy_coef,
        critic_coeff=critic_coef,
        loss_critic_type="l2",
        normalize_advantage=True,
        normalize_advantage_exclude_dims=(),
    )
