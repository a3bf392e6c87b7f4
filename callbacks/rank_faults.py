"""Under DDP, a failure on any rank stops every rank within a bounded time, in one line each.

The rules live in ``lit_rl.training.rank_faults``; this callback applies them when Lightning hands
an exception to the callbacks (before its own clean-up, which is what could hang): it prints the
rank's one line, keeps the traceback in ``<run>/errors/rank<r>.txt`` and arms the watchdog that
ends the process ``grace_s`` later if the clean-up has not finished. A preemption (SIGTERM,
``callbacks.Preemption``) is not a fault and is left alone; a single process is left alone too
(its exception reaches the user as it is).
"""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_rl.training.rank_faults import report


class RankFaults(Callback):
    """Report a DDP rank's failure in one line and bound the time its process takes to end.

    Args:
        grace_s: seconds the failed process may spend on its clean-up (collectors, evaluation
            worker, the interrupted-run hooks of the other callbacks) before it is ended; the other
            ranks notice the failure once it has ended.
    """

    def __init__(self, grace_s: float = 60.0):
        self.grace_s = grace_s

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            report(trainer.global_rank, exception, trainer.default_root_dir, self.grace_s)
