"""Trace the logistic actor's weight w and bias b over training (AppleRetrieval's σ(w·o + b)).

The paper explains forgetting on AppleRetrieval by the ratio |b|/|w| (appendix A, Figs 10–11): π*,
trained on phase 2 only, solves it with the bias b that both phases share; fitting phase 1 then moves
b and undoes phase 2 unless w grows enough to tell the phases apart (|b|/|w| < c). This callback
records (frames, w, b) after every optimiser step and writes them to ``<run>/logistic_actor.json``.

Why a callback and not the checkpoints: a run keeps only ``last.ckpt``, and the interesting part of
the trace is the first few hundred thousand frames, where the bias moves over a handful of updates;
recording two scalars per update is free, whereas keeping a checkpoint per update is not. The file is
rewritten atomically every ``write_every`` records and at the end, and the trace is part of the
callback's state, so a resumed run continues it.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from callbacks.run_summary import atomic_write_text
from lit_rl.models.policies import LogisticPolicyNet


def logistic_parameters(pl_module: LightningModule) -> tuple[float, float]:
    """(w, b) of the model's logistic actor; a ``ValueError`` for any other actor."""
    nets = [m for m in pl_module.policy["actor"].modules() if isinstance(m, LogisticPolicyNet)]
    if len(nets) != 1 or nets[0].linear.weight.numel() != 1:
        raise ValueError("LogisticActorTrace needs the one-input logistic actor (apple, policy: logistic)")
    linear = nets[0].linear
    return float(linear.weight.detach().reshape(())), float(linear.bias.detach().reshape(()))


class LogisticActorTrace(Callback):
    """Records the logistic actor's (w, b) at the start and after every training batch (rank 0).

    Args:
        filename: trace file inside the run folder: ``{"env_steps": [...], "w": [...], "b": [...]}``.
        write_every: rewrite the file every this many records (and always at the end).
    """

    def __init__(self, filename: str = "logistic_actor.json", write_every: int = 20):
        if write_every < 1:
            raise ValueError(f"write_every must be >= 1, got {write_every}")
        self.filename, self.write_every = filename, write_every
        self.trace: dict[str, list] = {"env_steps": [], "w": [], "b": []}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logistic_parameters(pl_module)  # fail before training, not after it

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.trace["env_steps"]:
            self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(trainer, pl_module)
        if len(self.trace["env_steps"]) % self.write_every == 0:
            self._write(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def _record(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        w, b = logistic_parameters(pl_module)
        frames = int(pl_module.env_frames)
        if self.trace["env_steps"] and self.trace["env_steps"][-1] == frames:
            return
        self.trace["env_steps"].append(frames)
        self.trace["w"].append(w)
        self.trace["b"].append(b)
        for logger in trainer.loggers:
            logger.log_metrics({"train/actor_w": w, "train/actor_b": b}, step=trainer.global_step)

    def _write(self, trainer: Trainer) -> None:
        if trainer.is_global_zero:
            atomic_write_text(Path(trainer.default_root_dir) / self.filename, json.dumps(self.trace))

    def state_dict(self) -> dict:
        return {"trace": self.trace}

    def load_state_dict(self, state_dict: dict) -> None:
        self.trace = {key: list(values) for key, values in state_dict["trace"].items()}
