"""Checkpoints a resumed run can trust: they hold every metrics row up to their own frame.

Two small additions to Lightning's own pieces:

- :class:`ResumableModelCheckpoint` is Lightning's ``ModelCheckpoint`` with two timing changes. A
  step-triggered save happens at the start of the next batch instead of at the end of its own,
  because Lightning logs a batch's training metrics only after every ``on_train_batch_end`` hook:
  saving at the end would leave that batch's metrics row out of the checkpoint, and a run killed
  between the save and the next log flush would resume with that row missing. The model, optimiser
  and callback states are the same at both moments. And a run that finishes saves ``last.ckpt``
  once more, so ``last.ckpt`` of a finished run is its final policy, not the last multiple of
  ``every_n_train_steps``.
- :class:`CheckpointedMetrics` stores the CSV logger's rows in each checkpoint and writes them
  back when a run resumes. Lightning's CSV logger deletes an existing ``metrics.csv`` when it opens
  a non-empty run folder, so without this a resumed run keeps only the metrics logged after the
  resume; and a kill loses the rows logged since the last checkpoint, which the resumed run logs
  again. Restoring exactly the rows the checkpoint saw gives one row per batch and per evaluation,
  none twice and none missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that saves step checkpoints after the batch's metrics are logged and
    saves ``last`` when training ends (see the module docstring for why)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Deferred to the next :meth:`on_train_batch_start`."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The state here equals the state at the end of the previous batch, with its metrics logged.
        super().on_train_batch_end(trainer, pl_module, None, batch, batch_idx)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class CheckpointedMetrics(Callback):
    """Carries the rows of every ``CSVLogger`` in the checkpoint and restores them on resume.

    The rows are read back from ``metrics.csv`` after a flush, so they are what a reader of the
    file saw; a resumed run rewrites the file with them before it logs anything new.
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._restored: list[str] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return {}
        texts = []
        for logger in _csv_loggers(trainer):
            logger.save()
            path = Path(logger.experiment.metrics_file_path)
            texts.append(path.read_text() if path.exists() else "")
        return {"metrics_csv": texts}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict.get("metrics_csv")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restored here, before Lightning writes anything through the logger, so that resuming a
        run that had already finished (its fit loop is skipped: no ``on_train_start``) keeps
        its rows too; strategies that restore callback states later are restored at train start."""
        self.on_train_start(trainer, pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        restored, self._restored = self._restored, None
        if restored is None or not trainer.is_global_zero:
            return
        for logger, text in zip(_csv_loggers(trainer), restored, strict=False):
            writer = logger.experiment
            rows = list(csv.DictReader(text.splitlines()))
            Path(writer.metrics_file_path).unlink(missing_ok=True)
            writer.metrics_keys = []
            writer.metrics = rows + writer.metrics
            logger.save()


def _csv_loggers(trainer: Trainer) -> list[CSVLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]
