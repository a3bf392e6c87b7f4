"""The Throughput callback logs frame and update rates to every logger on each batch."""

from __future__ import annotations

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.loggers.logger import Logger

from callbacks.throughput import Throughput


class Recorder(Logger):
    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))


class Tiny(LightningModule):
    """Counts 10 frames per batch and makes two optimiser steps per batch, like PPO minibatches."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(1, 1)
        self.register_buffer("env_frames", torch.tensor(0, dtype=torch.long))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(4), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch, batch_idx):
        self.env_frames += 10
        optimizer = self.optimizers()
        for _ in range(2):
            optimizer.zero_grad()
            self.manual_backward(self.layer(torch.ones(1, 1)).sum())
            optimizer.step()


def _fit(tmp_path, callback: Throughput) -> list[tuple[int, dict]]:
    recorders = [Recorder(), Recorder()]
    trainer = Trainer(
        max_epochs=1,
        logger=recorders,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny())
    assert recorders[0].rows == recorders[1].rows  # every logger gets the same rows
    return [row for row in recorders[0].rows if "time/env_frames_per_s" in row[1]]


def test_logs_rates_every_batch(tmp_path):
    rows = _fit(tmp_path, Throughput())
    assert [step for step, _ in rows] == [2, 4, 6, 8]
    for _, metrics in rows:
        assert set(metrics) == {"time/env_frames_per_s", "time/updates_per_s"}
        # 10 frames and 2 updates per batch: the two rates keep that proportion
        assert metrics["time/env_frames_per_s"] > 0
        assert abs(metrics["time/env_frames_per_s"] / metrics["time/updates_per_s"] - 5) < 1e-6


def test_every_n_batches(tmp_path):
    rows = _fit(tmp_path, Throughput(every_n_batches=2))
    assert [step for step, _ in rows] == [4, 8]
