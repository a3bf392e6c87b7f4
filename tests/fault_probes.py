"""Test-only fault injection for the DDP fault tests (tests/test_ddp_faults.py).

Each class stands in for a real fault on one rank only: the rank is read from torch.distributed,
so the other rank runs the real code path and must notice its peer's failure by itself.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from lightning import Callback

from lit_rl.checkpoint_io import AtomicCheckpointIO
from lit_rl.envs.apple import AppleRetrievalEnv
from lit_rl.scenarios import AppleRetrieval


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class DiskFullAtSave(AtomicCheckpointIO):
    """Checkpoint IO whose ``at_save``-th write fails with ENOSPC half-way through, on ``rank``."""

    def __init__(self, rank: int = 0, at_save: int = 2):
        super().__init__()
        self.rank, self.at_save, self.saves = rank, at_save, 0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.saves += 1
        if _rank() == self.rank and self.saves == self.at_save:
            real_save = torch.save

            def disk_fills(obj, f, *args, **kwargs):
                f.write(b"the first bytes of a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            torch.save = disk_fills
            try:
                return super().save_checkpoint(checkpoint, path, storage_options)
            finally:
                torch.save = real_save
        return super().save_checkpoint(checkpoint, path, storage_options)


class FaultyAppleEnv(AppleRetrievalEnv):
    """From its ``after``-th step on, raises ``error`` (a simulator that died, a bug) or, with no
    error, returns NaN rewards (every loss on this rank becomes non-finite)."""

    def __init__(self, *args, error: Exception | None, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.error, self.after, self.steps = error, after, 0

    def _step(self, tensordict):
        self.steps += 1
        if self.steps >= self.after and self.error is not None:
            raise self.error
        out = super()._step(tensordict)
        if self.steps >= self.after:
            out.set("reward", torch.full_like(out["reward"], float("nan")))
        return out


FAULTS = {
    "crash": lambda: RuntimeError("simulated simulator crash"),
    "bug": lambda: ValueError("simulated bug in the collector"),
    "nan": lambda: None,
}


class FaultyApple(AppleRetrieval):
    """AppleRetrieval whose training environments on ``rank`` fail from their ``after``-th step.

    Args:
        fault: ``crash`` (a RuntimeError, what a dying simulator raises: restarted until
            ``max_simulator_restarts``), ``bug`` (a ValueError: an exception in the collector that
            is not a simulator fault) or ``nan`` (NaN rewards: non-finite losses on that rank).
    """

    def __init__(self, rank: int = 1, fault: str = "crash", after: int = 150, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.fault, self.after = rank, fault, after

    def make_env(self, num_envs, start, seed, training=False):
        if not training or _rank() != self.rank:
            return super().make_env(num_envs, start, seed, training)
        env = FaultyAppleEnv(
            num_envs, self.length, self.scale, start=start, error=FAULTS[self.fault](), after=self.after
        )
        env.set_seed(seed)
        return env


class TermWithEvaluationInFlight(Callback):
    """Sends this process SIGTERM (a cluster's preemption) at the first batch end at or after
    ``at_frames`` where a background evaluation is still in flight."""

    def __init__(self, at_frames: int):
        self.at_frames, self.sent = at_frames, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        evaluation = next(c for c in trainer.callbacks if type(c).__name__ == "SubspaceEvaluation")
        if not self.sent and evaluation.in_flight and int(pl_module.env_frames) >= self.at_frames:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class RankEvaluations(Callback):
    """Each rank writes what its evaluation callback did (``evaluations-rank<r>.json``): whether it
    ran an evaluation worker and the frames of the evaluations it recorded."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.worker = self._evaluation(trainer)._worker is not None

    def on_train_end(self, trainer, pl_module) -> None:
        evaluation = self._evaluation(trainer)
        path = Path(trainer.default_root_dir) / f"evaluations-rank{trainer.global_rank}.json"
        frames = [entry["env_steps"] for entry in evaluation.history]
        path.write_text(json.dumps({"worker": self.worker, "recorded": frames}))

    @staticmethod
    def _evaluation(trainer):
        return next(c for c in trainer.callbacks if type(c).__name__ == "SubspaceEvaluation")


class HangingCleanup(Callback):
    """On ``rank``, the clean-up after an exception never finishes (as a worker that does not stop
    would make it): only the watchdog of ``RankFaults`` can end that process."""

    def __init__(self, rank: int = 1):
        self.rank = rank

    def on_exception(self, trainer, pl_module, exception) -> None:
        if trainer.global_rank == self.rank:
            threading.Event().wait()
