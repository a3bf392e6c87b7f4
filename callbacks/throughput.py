"""Log training throughput: environment frames and optimiser updates per second of wall time."""

from __future__ import annotations

import time

from lightning import Callback, LightningModule, Trainer


class Throughput(Callback):
    """Logs ``time/env_frames_per_s`` and ``time/updates_per_s`` to every trainer logger.

    Frames come from ``pl_module.env_frames`` and updates from ``trainer.global_step`` (one per
    optimiser step, also under manual optimisation). Each rate covers the wall time since the
    previous log (the start of training for the first one), so a slowdown shows where it happens;
    ``every_n_batches`` widens that window.

    Lightning's ``ThroughputMonitor`` (with ``batch_size_fn=TensorDict.numel``) would count the
    frames, but it logs at the batch index while every other metric here is logged at the
    optimiser step (``ppo_epochs × minibatches`` steps per batch), so its rows would not line up in
    ``metrics.csv``; it also restarts its counts on resume and has no updates-per-second figure.
    """

    def __init__(self, every_n_batches: int = 1):
        if every_n_batches < 1:
            raise ValueError(f"every_n_batches must be >= 1, got {every_n_batches}")
        self.every_n_batches = every_n_batches
        self._last: tuple[float, int, int] | None = None
        self._batches = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last = (time.monotonic(), int(pl_module.env_frames), trainer.global_step)
        self._batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if self._last is None or self._batches % self.every_n_batches:
            return
        now, frames, steps = time.monotonic(), int(pl_module.env_frames), trainer.global_step
        then, frames_before, steps_before = self._last
        elapsed = max(now - then, 1e-9)
        self._last = (now, frames, steps)
        metrics = {
            "time/env_frames_per_s": (frames - frames_before) / elapsed,
            "time/updates_per_s": (steps - steps_before) / elapsed,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=steps)
