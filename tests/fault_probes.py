"""Test-only fault injection for the DDP fault tests (tests/test_ddp_faults.py).

Each class stands in for a real fault on one rank only: the rank is read from torch.distributed,
so the other rank runs the real code path and must notice its peer's failure by itself.
"""

from __future__ import annotations

import errno
import os

import torch
import torch.distributed as dist

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
