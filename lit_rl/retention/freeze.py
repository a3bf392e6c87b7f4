"""Freezing chosen parts of the policy, optionally until a set number of environment frames.

Freezing the whole actor is the crudest retention baseline. Parameters are chosen through the
policy contract (``ActorCritic.select``): ``actor`` means the behaviour parameters (the value head of
a shared trunk keeps training), ``critic`` the value function's own, any deeper name prefix
(``actor.module.0``) the parameters under it. The scenario's fixed parts (NetHack's encoders) are
never chosen, so a thaw restores exactly what this method froze.
"""

from __future__ import annotations

from jsonargparse.typing import NonNegativeInt
from torch import nn

from lit_rl.retention.base import RetentionMethod
from lit_rl.scenarios.base import ActorCritic


class Freeze(RetentionMethod):
    """Freeze the parameters chosen by ``modules``; thaw them at ``unfreeze_at`` env frames."""

    name = "freeze"

    def __init__(self, modules: list[str] | None = None, unfreeze_at: NonNegativeInt | None = None):
        super().__init__(0.0)
        if unfreeze_at is not None and unfreeze_at < 0:
            raise ValueError(f"freeze.unfreeze_at must be >= 0 frames, got {unfreeze_at}")
        self.modules_to_freeze = list(modules or ["actor"])
        self.unfreeze_at = unfreeze_at
        self._params: list[nn.Parameter] = []

    def attach(self, policy: ActorCritic) -> None:
        self._params = policy.select(self.modules_to_freeze)
        if not self._params:
            names = sorted({n.split(".")[0] for n, _ in policy.named_parameters()})
            raise ValueError(
                f"freeze.modules {self.modules_to_freeze} match no trainable parameter; try {names}"
            )

    def on_env_frames(self, env_frames: int) -> None:
        thawed = self.unfreeze_at is not None and env_frames >= self.unfreeze_at
        for p in self._params:
            p.requires_grad_(thawed)
        self.coef.fill_(0.0 if thawed else 1.0)
