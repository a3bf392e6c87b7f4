"""Knowledge-retention methods mixed into the actor-critic objective (paper §2).

Each method is one ``RetentionMethod`` subclass whose constructor takes its own settings; a run
lists the methods it uses (``model.retention``: class paths with their settings, appended by each
``configs/method/<name>.yaml``), so methods combine (``METHOD=bc+ks``) and the trainer has no
argument per method. No method listed is plain fine-tuning (``none``).
"""

from lit_rl.retention.anchored import EWC, L2Init
from lit_rl.retention.base import RetentionContext, RetentionMethod, teacher_student_kl
from lit_rl.retention.distillation import BehaviouralCloningReplay, Kickstarting
from lit_rl.retention.freeze import Freeze

__all__ = [
    "BehaviouralCloningReplay",
    "EWC",
    "Freeze",
    "Kickstarting",
    "L2Init",
    "RetentionContext",
    "RetentionMethod",
    "teacher_student_kl",
]
