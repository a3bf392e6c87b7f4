"""Write the run folder's ``summary.json``: the figures a user compares across methods.

It is rewritten atomically after every evaluation and at the end of training, so a killed run
still leaves a readable summary. Wall time accumulates across resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from callbacks.subspace_evaluation import SubspaceEvaluation


class RunSummary(Callback):
    """Keeps ``<run folder>/summary.json`` current (rank 0 only)."""

    def __init__(self, filename: str = "summary.json"):
        self.filename = filename
        self.wall_time_before = 0.0
        self._started = time.monotonic()
        self._written_evals = -1

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.monotonic()
        self._write(trainer, pl_module, finished=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        evaluation = _evaluation(trainer)
        if evaluation is not None and len(evaluation.history) != self._written_evals:
            self._write(trainer, pl_module, finished=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, finished=True)

    def wall_time(self) -> float:
        return self.wall_time_before + time.monotonic() - self._started

    def _write(self, trainer: Trainer, pl_module: LightningModule, finished: bool) -> None:
        if not trainer.is_global_zero:
            return
        evaluation = _evaluation(trainer)
        history = evaluation.history if evaluation else []
        self._written_evals = len(history)
        wall = self.wall_time()
        frames = int(pl_module.env_frames)
        summary = {
            "env": pl_module.scenario.name,
            "method": pl_module.method_name,
            "seed": pl_module.hparams.seed,
            "budget_frames": pl_module.hparams.budget_frames,
            "env_steps": frames,
            "finished": finished,
            "wall_time_s": round(wall, 2),
            "env_steps_per_s": round(frames / wall, 1) if wall > 0 else 0.0,
            "optimizer_steps": trainer.global_step,
            "nonfinite_updates": int(pl_module.nonfinite_updates),
            "pretrained": history[0] if history and history[0]["env_steps"] == 0 else None,
            "eval": {k: v for k, v in history[-1].items() if k != "env_steps"} if history else {},
            "eval_history": history,
        }
        path = Path(trainer.default_root_dir) / self.filename
        atomic_write_text(path, json.dumps(summary, indent=2))

    def state_dict(self) -> dict:
        return {"wall_time_s": self.wall_time()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.wall_time_before = float(state_dict["wall_time_s"])
        self._started = time.monotonic()


def _evaluation(trainer: Trainer) -> SubspaceEvaluation | None:
    return next((c for c in trainer.callbacks if isinstance(c, SubspaceEvaluation)), None)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
