"""Evaluate the policy from the start states of every named subspace (CLOSE, FAR, …).

Every ``every_frames`` environment frames the callback plays ``episodes`` episodes from each
subspace's start states and logs ``eval/<subspace>/<metric>``. The first evaluation runs before any
update, so it measures the pre-trained policy. Evaluation runs on rank 0 only; its history is part
of the callback state, so a resumed run keeps the curve it had.

In the background (``background``, default the model's ``evaluation.background``) an evaluation is a
snapshot of the actor's weights handed to an ``EvaluationWorker`` process, and training goes on
while it plays. Results are logged in order, at the frame count and step of their snapshot (not
when they arrive), so the history, ``summary.json`` and ``metrics.csv`` are the ones the
foreground evaluation would have written. A checkpoint stores the snapshots still in flight, and a
resumed run evaluates them first; a finished run waits for every evaluation before it ends.

The frame-0 evaluation of a run that starts from π* (``pretrained``) is read from π*'s evaluation
cache when another run already made it with the same weights and settings
(``lit_rl.evaluation_cache``), else made here, in the foreground, and stored there.
"""

from __future__ import annotations

import copy

import torch
from jsonargparse.typing import PositiveInt
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_rl.evaluation import EvaluationWorker
from lit_rl.evaluation_cache import PiStarEvaluations

#: snapshots submitted but not yet logged before the learner waits for the oldest: one playing
#: and one queued, so a period shorter than an evaluation slows training instead of piling up
MAX_IN_FLIGHT = 2


class SubspaceEvaluation(Callback):
    """Periodic CLOSE/FAR evaluation measured in environment frames, by the model's evaluator
    (``SubspaceEvaluator``: episodes, seed and sampling rule are model settings, shared with
    ``lit-rl validate``).

    Args:
        every_frames: evaluation period in environment frames (default: the model's
            ``evaluation.every_frames``, so one command-line flag sets it).
        background: evaluate snapshots in a process of their own while training goes on
            (default: the model's ``evaluation.background``, else off).
    """

    def __init__(self, every_frames: PositiveInt | None = None, background: bool | None = None):
        self.every_frames = every_frames
        self.background = background
        self.history: list[dict] = []
        self.next_at = 0
        #: background snapshots not yet logged, oldest first: {env_steps, step, weights}
        self.in_flight: list[dict] = []
        self._worker: EvaluationWorker | None = None

    @property
    def latest(self) -> dict | None:
        return self.history[-1] if self.history else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.every_frames = self.every_frames or pl_module.evaluation.every_frames
        if self.background is None:
            self.background = pl_module.evaluation.background
        if self.background and stage == "fit" and trainer.is_global_zero and self._worker is None:
            # started here, so its seconds of start-up overlap the checkpoint restore and collector start
            self._worker = EvaluationWorker(pl_module.scenario, pl_module.evaluator, torch.get_num_threads())

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            self.in_flight = []  # rank 0 evaluates what a resumed checkpoint held
        elif self._worker is not None:
            for job in self.in_flight:  # snapshots a resumed checkpoint held
                self._worker.submit(job["env_steps"], job["weights"])
        else:  # resumed with background evaluation off: evaluate the held snapshots here
            actor = copy.deepcopy(pl_module.policy["actor"])
            for job in self.in_flight:
                actor.load_state_dict(job["weights"])
                results = pl_module.evaluator.evaluate_all(pl_module.scenario, actor)
                self._record(trainer, pl_module, job["env_steps"], job["step"], results)
            self.in_flight = []
        if not self.history and not self.in_flight:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._log_finished(trainer, pl_module, wait=False)
        if int(pl_module.env_frames) >= self.next_at:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        last = self.in_flight[-1] if self.in_flight else self.latest
        if last is None or last["env_steps"] != int(pl_module.env_frames):
            self._evaluate(trainer, pl_module)
        while self.in_flight:
            self._log_finished(trainer, pl_module, wait=True)
        self._stop_worker()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # at once: a preempted run has seconds to save, and the snapshots in flight are in its state
        self._stop_worker(wait_s=0.0)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stop_worker()

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        frames = int(pl_module.env_frames)
        self.next_at = (frames // self.every_frames + 1) * self.every_frames
        if not trainer.is_global_zero:
            return
        actor = pl_module.policy["actor"]
        pistar = pl_module.hparams.get("pretrained")
        if frames == 0 and not self.history and pistar is not None:
            self._record(trainer, pl_module, frames, trainer.global_step, self._pistar(pl_module, pistar))
            return
        if self._worker is None:
            results = pl_module.evaluator.evaluate_all(pl_module.scenario, actor)
            self._record(trainer, pl_module, frames, trainer.global_step, results)
            return
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            self._log_finished(trainer, pl_module, wait=True)
        weights = {name: value.detach().to("cpu", copy=True) for name, value in actor.state_dict().items()}
        self.in_flight.append({"env_steps": frames, "step": trainer.global_step, "weights": weights})
        self._worker.submit(frames, weights)

    def _pistar(self, pl_module: LightningModule, pistar: str) -> dict:
        """π*'s evaluation (the run has not moved from π* yet): from its cache, else made and cached."""
        actor = pl_module.policy["actor"]
        cache = PiStarEvaluations(pistar, pl_module.scenario, pl_module.evaluator, actor)
        results, reused = cache.evaluate(lambda: pl_module.evaluator.evaluate_all(pl_module.scenario, actor))
        rank_zero_info(f"π*'s evaluation {'reused from' if reused else 'stored in'} {cache.path}")
        return results

    def _log_finished(self, trainer: Trainer, pl_module: LightningModule, wait: bool) -> None:
        """Log the background evaluations that are done, oldest first (``wait``: wait for the
        oldest and log it alone)."""
        while self._worker is not None and self.in_flight:
            finished = self._worker.result(block=wait)
            if finished is None:
                return
            frames, results = finished
            job = self.in_flight.pop(0)
            assert job["env_steps"] == frames, "the evaluation worker answered out of order"
            self._record(trainer, pl_module, frames, job["step"], results)
            if wait:
                return

    def _record(
        self, trainer: Trainer, pl_module: LightningModule, frames: int, step: int, results: dict
    ) -> None:
        entry = {"env_steps": frames, **results}
        self.history.append(entry)
        metrics = {
            f"eval/{subspace}/{name}": float(value)
            for subspace in pl_module.scenario.subspaces
            for name, value in entry[subspace].items()
        }
        metrics["eval/env_frames"] = float(frames)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _stop_worker(self, wait_s: float = 30.0) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(wait_s)

    def state_dict(self) -> dict:
        in_flight = [dict(job) for job in self.in_flight]
        return {"history": self.history, "next_at": self.next_at, "in_flight": in_flight}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
        self.next_at = int(state_dict["next_at"])
        self.in_flight = list(state_dict.get("in_flight", []))  # older checkpoints have none
