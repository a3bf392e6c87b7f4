"""Preemption: a run told to stop saves ``last.ckpt`` and exits cleanly, ready for ``RESUME=1``.

Clusters stop jobs with a signal: SIGTERM when a job is cancelled or preempted (SLURM, Kubernetes,
torchrun's agent), and, with ``sbatch --signal=USR1@90``, SIGUSR1 90 s before the time limit.

Lightning already handles SIGTERM well: its signal connector only sets a flag, and the training
loop stops at the next batch boundary with ``SIGTERMException`` (a clean ``SystemExit``), the flag
broadcast to every DDP rank. This callback builds on that path:

- the listed signals (default SIGUSR1) are routed into it, so a time-limit warning stops the run
  the same way, at a batch boundary;
- on that stop it saves ``last.ckpt`` through the trainer's checkpoint callback and says so in one
  line, so the process exits with code 0 and a checkpoint that ``--ckpt_path last`` resumes;
- under SLURM, a stop caused by one of the listed signals requeues the job (``scontrol requeue``),
  as Lightning's ``SLURMEnvironment(auto_requeue=True)`` would.

Lightning's own SLURM SIGUSR1 handler is displaced on purpose (it is installed only where no handler
exists): it saves from inside the signal handler, at whatever point of a training step the signal
arrives (e.g. between the frame counter's update and the optimiser step), and it writes
``hpc_ckpt_<n>.ckpt``, which ``--ckpt_path last`` does not read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Preemption(Callback):
    """Stop at a batch boundary on SIGTERM or on ``signals``, save ``last.ckpt``, exit with 0.

    Args:
        signals: names of extra signals that stop the run like SIGTERM (SLURM: ``--signal=USR1@90``).
        requeue: under SLURM (``SLURM_JOB_ID`` set), requeue the job after a stop caused by one of
            ``signals``; a plain SIGTERM (``scancel``, preemption) is left to SLURM's own policy.
    """

    def __init__(self, signals: list[str] | None = None, requeue: bool = True):
        names = ["SIGUSR1"] if signals is None else list(signals)
        unknown = [name for name in names if not isinstance(getattr(signal, name, None), signal.Signals)]
        if unknown:
            raise ValueError(f"Preemption signals: unknown {unknown}; use names such as SIGUSR1, SIGUSR2")
        self.signals = [signal.Signals[name] for name in names]
        self.requeue = requeue
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        """Record the signal and hand it to Lightning's SIGTERM handler; before that handler is
        installed (setup, checkpoint restore) the stop waits for :meth:`on_train_start`."""
        self.received = signal.Signals(signum)
        self._deliver(frame)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.received is not None:
            self._deliver(None)

    def _deliver(self, frame) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if not isinstance(exception, SIGTERMException):
            return
        path = self._save_last(trainer)
        if trainer.is_global_zero:
            frames = int(getattr(pl_module, "env_frames", trainer.global_step))
            cause = self.received.name if self.received else "SIGTERM"
            print(
                f"lit-rl: stopped by {cause} at {frames:,} frames; saved {path}; "
                "continue with RESUME=1 (--ckpt_path last)",
                file=sys.stderr,
                flush=True,
            )
            if self.requeue and self.received in self.signals and os.environ.get("SLURM_JOB_ID"):
                _requeue_slurm_job()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()

    def _save_last(self, trainer: Trainer) -> Path | None:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            return None
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        # ModelCheckpoint records the step it last saved; a stop right after a save adds nothing.
        if getattr(checkpoint, "_last_global_step_saved", None) != trainer.global_step or not path.exists():
            trainer.save_checkpoint(path)
        return path

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _requeue_slurm_job() -> None:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"lit-rl: warning: could not requeue SLURM job {job} ({error})", file=sys.stderr)
        return
    status = "requeued" if result.returncode == 0 else f"requeue failed ({result.stderr.strip()[:200]})"
    print(f"lit-rl: SLURM job {job} {status}", file=sys.stderr)
