"""Write the run folder's ``summary.json``: the figures a user compares across methods.

It is rewritten atomically after every evaluation and at the end of training, so a killed run
still leaves a readable summary. Wall time accumulates across resumes.

Besides the raw evaluation history it stores the statistics users compare, computed here once so
that ``make report`` and the tests read the same numbers:

- ``curve``: per subspace, the return of the first (π*), last, lowest and mean evaluation. The
  minimum and mean matter because vanilla fine-tuning forgets FAR and may re-learn it late, so the
  final value alone hides the forgetting.
- ``transfer``: the mean CLOSE return over all evaluations of the run (frame 0 included), i.e. the
  area under the CLOSE curve divided by its length for evenly spaced evaluations. A CLOSE episode
  is the whole downstream task, so this is the downstream score integrated over fine-tuning: it
  rewards learning CLOSE early, which a final value cannot tell apart from learning it late.
- ``preset``: the env preset the run came from (``apple``, ``montezuma_paper``, …), so reports
  never average a paper-scale run with a CPU-scale run of the same environment.
- ``stage``: ``pretrain`` for a run that makes π* (neither a pre-trained policy nor a teacher),
  else ``finetune``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from callbacks.subspace_evaluation import SubspaceEvaluation

TRANSFER_SUBSPACE = "close"


def returns(history: list[dict], subspace: str) -> list[float]:
    """The subspace's mean evaluation return at every evaluation of ``history``."""
    return [float(entry[subspace]["return_mean"]) for entry in history if subspace in entry]


def curve_stats(history: list[dict]) -> dict[str, dict[str, float]]:
    """Per subspace: ``start`` (first evaluation), ``final``, ``min`` and ``mean`` of the return."""
    subspaces = [k for k in (history[0] if history else {}) if k != "env_steps"]
    stats = {}
    for subspace in subspaces:
        ys = returns(history, subspace)
        if ys:
            stats[subspace] = {
                "start": ys[0],
                "final": ys[-1],
                "min": min(ys),
                "mean": sum(ys) / len(ys),
            }
    return stats


def transfer(history: list[dict], subspace: str = TRANSFER_SUBSPACE) -> float | None:
    """Mean CLOSE return over all evaluations of the run (``None`` without CLOSE evaluations).

    Every evaluation counts once, the one before the first update included, so two runs with the
    same evaluation period are compared on the same frames: a method that learns CLOSE sooner
    scores higher even when both end at the same final return.
    """
    ys = returns(history, subspace)
    return sum(ys) / len(ys) if ys else None


class RunSummary(Callback):
    """Keeps ``<run folder>/summary.json`` current (rank 0 only).

    Args:
        filename: name of the summary file inside the run folder.
        preset: name of the env preset (``configs/env/<preset>.yaml``) the run was configured
            with; written as ``preset`` so reports group runs per preset. ``None`` if unknown
            (reports then fall back to the environment's name).
    """

    def __init__(self, filename: str = "summary.json", preset: str | None = None):
        self.filename = filename
        self.preset = preset
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
            "preset": self.preset,
            "stage": "pretrain" if _makes_pi_star(pl_module) else "finetune",
            "method": pl_module.method_name,
            "seed": pl_module.hparams.seed,
            "budget_frames": pl_module.budget.frames,
            "env_steps": frames,
            "finished": finished,
            "wall_time_s": round(wall, 2),
            "env_steps_per_s": round(frames / wall, 1) if wall > 0 else 0.0,
            "optimizer_steps": trainer.global_step,
            "nonfinite_updates": int(pl_module.nonfinite_updates),
            "pretrained": history[0] if history and history[0]["env_steps"] == 0 else None,
            "eval": {k: v for k, v in history[-1].items() if k != "env_steps"} if history else {},
            "transfer": transfer(history),
            "curve": curve_stats(history),
            "eval_history": history,
        }
        path = Path(trainer.default_root_dir) / self.filename
        atomic_write_text(path, json.dumps(summary, indent=2))

    def state_dict(self) -> dict:
        return {"wall_time_s": self.wall_time()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.wall_time_before = float(state_dict["wall_time_s"])
        self._started = time.monotonic()


def _makes_pi_star(pl_module: LightningModule) -> bool:
    """A run without a pre-trained policy or a teacher is pre-training (the run-folder rule)."""
    hparams = pl_module.hparams
    return hparams.get("pretrained") is None and hparams.get("teacher") is None


def _evaluation(trainer: Trainer) -> SubspaceEvaluation | None:
    return next((c for c in trainer.callbacks if isinstance(c, SubspaceEvaluation)), None)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
