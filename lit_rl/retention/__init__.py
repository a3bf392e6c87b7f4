"""Knowledge-retention methods mixed into the actor-critic objective (paper §2).

Each method has a settings dataclass (what its YAML under ``configs/method/`` fills in) and a
``RetentionMethod`` that holds its state. ``METHODS`` is the list users choose from; ``none`` is
plain fine-tuning. Several methods combine by setting several of them (``METHOD=bc+ks``).
"""

from lit_rl.retention.anchored import EWC, EWCConfig, L2Config, L2Init
from lit_rl.retention.base import RetentionContext, RetentionMethod, teacher_student_kl
from lit_rl.retention.distillation import BCConfig, BehaviouralCloningReplay, Kickstarting, KSConfig
from lit_rl.retention.freeze import Freeze, FreezeConfig

METHODS = ("none", "freeze", "l2", "ewc", "bc", "ks")

__all__ = [
    "BCConfig",
    "BehaviouralCloningReplay",
    "EWC",
    "EWCConfig",
    "Freeze",
    "FreezeConfig",
    "KSConfig",
    "Kickstarting",
    "L2Config",
    "L2Init",
    "METHODS",
    "RetentionContext",
    "RetentionMethod",
    "teacher_student_kl",
]
