"""A test-only callback: the run kills itself (SIGKILL) once its last checkpoint holds a background
evaluation still in flight, as a crash at that moment would."""

import os
import signal
from pathlib import Path

import torch
from lightning import Callback


class KillWithEvaluationInFlight(Callback):
    def __init__(self):
        self.seen = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if not last.exists() or last.stat().st_mtime == self.seen:
            return
        self.seen = last.stat().st_mtime
        states = torch.load(last, weights_only=False)["callbacks"]
        evaluation = next(state for name, state in states.items() if "SubspaceEvaluation" in name)
        if evaluation.get("in_flight"):
            os.kill(os.getpid(), signal.SIGKILL)
