"""A progress bar counted in environment frames, with throughput and the latest CLOSE/FAR returns."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar

from callbacks.subspace_evaluation import SubspaceEvaluation


class FrameProgressBar(TQDMProgressBar):
    """Shows ``frames/budget``, frames per second and ``eval/<subspace>`` return means."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._t0, self._f0 = time.monotonic(), int(pl_module.env_frames)
        self.train_progress_bar.reset(total=pl_module.budget.frames)
        self.train_progress_bar.unit = "frame"
        self.train_progress_bar.n = self._f0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Keep the frame count; Lightning would reset the bar to its batch count here."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        frames = int(pl_module.env_frames)
        bar = self.train_progress_bar
        bar.n = frames
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        postfix = {"fps": f"{(frames - self._f0) / elapsed:,.0f}"}
        evaluation = next((c for c in trainer.callbacks if isinstance(c, SubspaceEvaluation)), None)
        if evaluation is not None and evaluation.latest is not None:
            for subspace in pl_module.scenario.subspaces:
                postfix[subspace] = f"{evaluation.latest[subspace]['return_mean']:.1f}"
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_progress_bar.refresh()
