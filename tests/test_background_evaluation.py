"""Issue 14, point 3: evaluation off the critical path (``model.evaluation.background``).

A background evaluation plays a snapshot of the weights in a process of its own; its results are
the foreground evaluation's, logged at the snapshot's frames and step, in order. A run killed while
an evaluation is in flight resumes and logs that evaluation once, with the numbers the uninterrupted
run logged.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from lightning import Callback, Trainer

from callbacks.subspace_evaluation import SubspaceEvaluation
from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.ppo import Optimisation, PPOFineTuning
from lit_rl.training.settings import Budget, Collection
from tests.conftest import APPLE, ROOT, TRAINER, fit

BATCH = 16 * 50
BUDGET = 25 * BATCH  # a checkpoint every 20 batches; the evaluation at 20 is in flight at 21
SETTINGS = ["--model.collection.num_envs", "16", "--model.collection.rollout_length", "50",
            "--model.optimisation.minibatch_size", str(BATCH), "--model.budget.frames", str(BUDGET),
            "--model.evaluation.every_frames", str(20 * BATCH)]  # fmt: skip


def logged_rows(run, key: str) -> list[tuple[str, str]]:
    """(step, frames) of the rows of ``metrics.csv`` that hold ``key``, in file order."""
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r[key]) for r in csv.DictReader(f) if r.get(key)]


def command(run, pretrained, *extra) -> list[str]:
    return [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER, *SETTINGS,
            "--model.pretrained", str(pretrained), "--model.evaluation.background", "true",
            "--run_dir", str(run), *extra]  # fmt: skip


def test_a_run_killed_with_an_evaluation_in_flight_resumes_with_the_foreground_numbers(
    pretrained_apple, tmp_path
):
    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "trainer:\n  callbacks+:\n    - class_path: tests.eval_probe.KillWithEvaluationInFlight\n"
    )
    run = tmp_path / "background"
    killed = subprocess.run(command(run, pretrained_apple, "--config", str(probe)), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    evaluation = next(s for name, s in state["callbacks"].items() if "SubspaceEvaluation" in name)
    in_flight = [job["env_steps"] for job in evaluation["in_flight"]]
    logged = [entry["env_steps"] for entry in evaluation["history"]]
    assert in_flight[-1] == 20 * BATCH and logged + in_flight == [0, 20 * BATCH]  # π*'s may be too

    resumed = subprocess.run(command(run, pretrained_apple, "--ckpt_path", "last"), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    background = json.loads((run / "summary.json").read_text())
    assert background["finished"] and background["env_steps"] == BUDGET
    assert [e["env_steps"] for e in background["eval_history"]] == [0, 20 * BATCH, BUDGET]
    # one row per batch and per evaluation, none twice, none missing, across the kill
    train = [int(float(frames)) for _, frames in logged_rows(run, "train/env_frames")]
    assert train == list(range(BATCH, BUDGET + 1, BATCH))
    assert [int(float(f)) for _, f in logged_rows(run, "eval/env_frames")] == [0, 20 * BATCH, BUDGET]

    foreground = tmp_path / "foreground"
    fit(*SETTINGS, "--model.pretrained", str(pretrained_apple), "--run_dir", str(foreground))
    reference = json.loads((foreground / "summary.json").read_text())
    # the same weights evaluated in the training process: identical numbers, logged at the same step
    assert background["eval_history"][:2] == reference["eval_history"][:2]
    assert logged_rows(run, "eval/env_frames")[:2] == logged_rows(foreground, "eval/env_frames")[:2]


class FailAtBatch(Callback):
    """Raises inside the training loop at ``batch``, remembering the evaluation worker's pid."""

    def __init__(self, batch: int):
        self.batch, self.pid = batch, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        evaluation = next(c for c in trainer.callbacks if isinstance(c, SubspaceEvaluation))
        self.pid = evaluation._worker.pid
        if batch_idx == self.batch:
            raise RuntimeError("a failure during training")


def test_an_exception_ends_the_evaluation_process(one_torch_thread):
    evaluation, failure = SubspaceEvaluation(every_frames=800, background=True), FailAtBatch(2)
    model = PPOFineTuning(
        AppleRetrieval(),
        collection=Collection(num_envs=16, rollout_length=50),
        optimisation=Optimisation(minibatch_size=800),
        budget=Budget(frames=8000),
    )
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[evaluation, failure])  # fmt: skip
    with pytest.raises(RuntimeError, match="during training"):
        trainer.fit(model)
    assert failure.pid is not None and evaluation._worker is None
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(failure.pid, 0)
