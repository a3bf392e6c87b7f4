"""The clipped PPO objective every on-policy trainer builds (plain PPO/APPO and PPO + RND).

TorchRL's ``MAPPOLoss`` is ``ClipPPOLoss`` plus a value-normaliser hook for the critic term; with one
agent and no excluded dimensions it is plain clipped PPO (Schulman et al. 2017, eq. 7):

    L = −E[min(r_t Â_t, clip(r_t, 1 ± ε) Â_t)] + c_v · E[(V(s_t) − V_t^target)²] − c_H · E[H(π(·|s_t))]

with advantages normalised per minibatch. ``value_norm=None`` leaves it unchanged.

One trunk pass per minibatch (issue 14): TorchRL's loss runs the actor first and the critic next on
the same (shallow-copied) minibatch TensorDict, so when actor and critic share a trunk the loss's
critic is only the value head reading what the actor's pass left there (``shared_trunk_critic``).
The loss also leaves the actor's logits of that pass, with their graph, in the caller's minibatch
(``CURRENT_LOGITS``), so a retention term on the same states (kickstarting) does not replay the
actor again.
"""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.modules import RunningValueNorm
from torchrl.objectives.multiagent import MAPPOLoss

from lit_rl.retention.distillation import CURRENT_LOGITS


class SharedPassPPOLoss(MAPPOLoss):
    """``MAPPOLoss`` that hands the logits of its actor pass back to the caller's minibatch
    (``CURRENT_LOGITS``), so other terms on the same states reuse the pass instead of repeating it."""

    _current_dist = None

    def _get_cur_log_prob(self, tensordict, params=None):
        log_prob, dist, is_composite = super()._get_cur_log_prob(tensordict, params)
        if params is None:  # the current parameters' pass, not a delayed actor's
            self._current_dist = dist
        return log_prob, dist, is_composite

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._current_dist = None
        out = super().forward(tensordict)
        logits = getattr(self._current_dist, "logits", None)
        if logits is not None:
            tensordict.set(CURRENT_LOGITS, logits)
        self._current_dist = None
        return out


def shared_trunk_critic(actor: nn.Module, critic: nn.Module) -> nn.Module:
    """The critic the PPO loss runs after the actor on the same minibatch: only the value head(s)
    when the actor's pass already computed the trunk they read, else the whole critic.

    Two shapes of sharing are recognised: a critic that offers ``head_on_actor_outputs()``
    (NetHack's recurrent ScaledNet: its value head on the replayed LSTM outputs), and a
    ``TensorDictSequential`` critic whose first module is the actor's first module (Montezuma's
    CNN trunk: the heads after it read the trunk's output keys)."""
    heads = getattr(critic, "head_on_actor_outputs", None)
    if heads is not None:
        return heads()
    if (
        isinstance(critic, TensorDictSequential)
        and isinstance(actor, TensorDictSequential)
        and len(critic.module) > 1
        and critic.module[0] is actor.module[0]
    ):
        return TensorDictSequential(*critic.module[1:])
    return critic


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
) -> SharedPassPPOLoss:
    """TorchRL's clipped PPO loss with the project's fixed choices (l2 critic loss, per-minibatch
    advantage normalisation); ``normalize_returns`` compares values in units of a running
    mean/std of the returns (TorchRL ``RunningValueNorm``). Pass ``shared_trunk_critic(actor,
    critic)`` as ``critic`` for one trunk pass per minibatch."""
    return SharedPassPPOLoss(
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
