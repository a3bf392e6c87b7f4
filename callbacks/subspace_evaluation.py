"""Evaluate the policy from the start states of every named subspace (CLOSE, FAR, …).

Every ``every_frames`` environment frames the callback plays ``episodes`` episodes from each
subspace's start states and logs ``eval/<subspace>/<metric>``. The first evaluation runs before any
update, so it measures the pre-trained policy. Evaluation runs on rank 0 only; its history is part
of the callback state, so a resumed run keeps the curve it had.
"""

from __future__ import annotations

from jsonargparse.typing import PositiveInt
from lightning import Callback, LightningModule, Trainer


class SubspaceEvaluation(Callback):
    """Periodic CLOSE/FAR evaluation measured in environment frames, by the model's evaluator
    (``SubspaceEvaluator``: episodes, seed and sampling rule are model settings, shared with
    ``lit-rl validate``).

    Args:
        every_frames: evaluation period in environment frames (default: the model's
            ``eval_every_frames``, so one command-line flag sets it).
    """

    def __init__(self, every_frames: PositiveInt | None = None):
        self.every_frames = every_frames
        self.history: list[dict] = []
        self.next_at = 0

    @property
    def latest(self) -> dict | None:
        return self.history[-1] if self.history else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.every_frames = self.every_frames or pl_module.hparams.eval_every_frames

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.history:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if int(pl_module.env_frames) >= self.next_at:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.latest is None or self.latest["env_steps"] != int(pl_module.env_frames):
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        frames = int(pl_module.env_frames)
        self.next_at = (frames // self.every_frames + 1) * self.every_frames
        if not trainer.is_global_zero:
            return
        scenario = pl_module.scenario
        entry = {"env_steps": frames, **pl_module.evaluator.evaluate_all(scenario, pl_module.policy["actor"])}
        self.history.append(entry)
        metrics = {
            f"eval/{subspace}/{name}": float(value)
            for subspace in scenario.subspaces
            for name, value in entry[subspace].items()
        }
        metrics["eval/env_frames"] = float(frames)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"history": self.history, "next_at": self.next_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
        self.next_at = int(state_dict["next_at"])
