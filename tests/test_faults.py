"""Faults a long run meets: a simulator that dies mid-run is restarted, counted, and the run
completes its budget; a damaged checkpoint is passed over for the previous one; a disk that fills
during a save stops the run with one line and leaves the checkpoint it had."""

import errno
import os
import subprocess
import sys

import pytest
import torch
from lightning import Trainer

from lit_rl.envs.apple import AppleRetrievalEnv
from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.ppo import PPOFineTuning
from lit_rl.training.settings import Budget, Collection
from tests.conftest import APPLE, ROOT, TRAINER
from tests.conftest import fit as conftest_fit
from tests.test_resume import logged_frames


class CrashingAppleEnv(AppleRetrievalEnv):
    """Dies like a crashed simulator after ``crash_after`` steps."""

    def __init__(self, *args, crash_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_after, self.steps = crash_after, 0

    def _step(self, tensordict):
        self.steps += 1
        if self.steps == self.crash_after:
            raise RuntimeError("simulated simulator crash")
        return super()._step(tensordict)


class CrashingApple(AppleRetrieval):
    """Training environments crash once each, for the first ``crashes`` builds."""

    def __init__(self, crashes: int):
        super().__init__()
        self.crashes = crashes

    def make_env(self, num_envs, start, seed, training=False):
        if not training or self.crashes == 0:
            return super().make_env(num_envs, start, seed, training)
        self.crashes -= 1
        return CrashingAppleEnv(num_envs, self.length, self.scale, start=start, crash_after=150)


def fit(module: PPOFineTuning) -> None:
    Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(module)  # fmt: skip


def test_crashed_simulator_is_restarted_and_the_budget_completed():
    module = PPOFineTuning(
        CrashingApple(crashes=2), collection=Collection(start="far"), budget=Budget(frames=6400 * 4)
    )
    with pytest.warns(UserWarning, match="simulated simulator crash"):
        fit(module)
    assert int(module.simulator_restarts) == 2
    assert int(module.env_frames) == 6400 * 4


def test_a_simulator_that_keeps_dying_stops_the_run_with_a_clear_message():
    module = PPOFineTuning(
        CrashingApple(crashes=5),
        collection=Collection(start="far"),
        budget=Budget(frames=6400 * 4, max_simulator_restarts=2),
    )
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="resume with RESUME=1"):
        fit(module)


# --- checkpoints a fault cannot take away (lit_rl/checkpoint_io.py) ------------------------------

SMALL_BUDGET = 6400 * 25  # a checkpoint at step 20 (kept as last.prev.ckpt) and the final one at 25


def lit_rl_fit(run, pretrained, *extra) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER,
               "--model.pretrained", str(pretrained), "--model.budget.frames", str(SMALL_BUDGET),
               "--model.evaluation.every_frames", "64000", "--model.evaluation.episodes", "32",
               "--run_dir", str(run), *extra]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def frames_of(path) -> int:
    return int(torch.load(path, weights_only=False)["state_dict"]["env_frames"])


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    last, previous = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.prev.ckpt"
    first = lit_rl_fit(run, pretrained_apple)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (frames_of(last), frames_of(previous)) == (SMALL_BUDGET, 6400 * 20)

    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    resumed = lit_rl_fit(run, pretrained_apple, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warning = [line for line in resumed.stderr.splitlines() if line.startswith("lit-rl: warning:")]
    assert len(warning) == 1 and "last.ckpt" in warning[0] and "last.prev.ckpt" in warning[0]
    assert frames_of(last) == SMALL_BUDGET, "the resumed run wrote a new, whole last.ckpt"
    train, evals = logged_frames(run)
    assert train == list(range(6400, SMALL_BUDGET + 1, 6400)) and evals == sorted(set(evals))

    # damaged bytes inside both files: torch.load alone would not notice, the zip checksums do
    for path in (last, previous):
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(64)
        path.write_bytes(bytes(data))
    stopped = lit_rl_fit(run, pretrained_apple, "--ckpt_path", "last")
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("lit-rl: error: no readable checkpoint") and "last.prev.ckpt" in line


def test_a_disk_that_fills_during_a_save_stops_the_run_and_keeps_the_checkpoint(
    pretrained_apple, tmp_path, monkeypatch
):
    """The second checkpoint's write fails half-way with ENOSPC: the run stops with one line, the
    first checkpoint stays readable and no temporary file is left."""
    run = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_fills(obj, f, *args, **kwargs):
        if getattr(f, "name", "").endswith(".tmp") and ".last.ckpt." in str(f.name):
            saves.append(f.name)
            if len(saves) == 2:
                f.write(b"the first megabyte of a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(SystemExit) as stop:
        conftest_fit("--model.pretrained", str(pretrained_apple),
                     "--model.budget.frames", str(6400 * 45), "--model.evaluation.episodes", "32",
                     "--run_dir", str(run))  # fmt: skip
    monkeypatch.undo()
    message = str(stop.value.code)
    assert stop.value.code != 0 and "\n" not in message
    assert "No space left on device" in message and "RESUME=1" in message
    folder = run / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    assert frames_of(folder / "last.ckpt") == 6400 * 20


def test_resuming_a_finished_run_keeps_its_metrics(pretrained_apple, tmp_path):
    """RESUME=1 on a run that had already finished skips Lightning's fit loop (no train-start hook);
    its metrics.csv must come back from the checkpoint all the same."""
    run = tmp_path / "run"
    args = ("--model.pretrained", str(pretrained_apple), "--model.budget.frames", str(6400 * 3),
            "--model.evaluation.episodes", "16", "--run_dir", str(run))  # fmt: skip
    conftest_fit(*args)
    before = (run / "metrics.csv").read_text()
    conftest_fit(*args, "--ckpt_path", "last")
    assert (run / "metrics.csv").exists() and (run / "metrics.csv").read_text() == before
