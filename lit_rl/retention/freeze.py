"""Freezing chosen parts of the policy, optionally until a set number of environment frames.

The paper froze NetHack's encoders during fine-tuning for stability; freezing the whole actor is the
crudest retention baseline. Parameters are chosen by name prefix within the policy
(``actor``, ``critic``, or any deeper prefix such as ``actor.module.0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from lit_rl.retention.base import RetentionMethod


@dataclass
class FreezeConfig:
    """Freeze parameters whose name starts with one of ``modules``; thaw them at ``unfreeze_at``."""

    modules: list[str] = field(default_factory=lambda: ["actor"])
    unfreeze_at: int | None = None


class Freeze(RetentionMethod):
    name = "freeze"

    def __init__(self, policy: nn.Module, config: FreezeConfig):
        super().__init__(0.0)
        self.config = config
        self._params = [
            p
            for name, p in policy.named_parameters()
            if any(name == m or name.startswith(m + ".") for m in config.modules)
        ]
        if not self._params:
            names = sorted({n.split(".")[0] for n, _ in policy.named_parameters()})
            raise ValueError(f"freeze.modules {config.modules} match no parameter; try {names}")

    def on_env_frames(self, env_frames: int) -> None:
        thawed = self.config.unfreeze_at is not None and env_frames >= self.config.unfreeze_at
        for p in self._params:
            p.requires_grad_(thawed)
        self.coef.fill_(0.0 if thawed else 1.0)
