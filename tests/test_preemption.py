"""A run that a cluster stops with SIGTERM (or SLURM's SIGUSR1 warning) saves a checkpoint, exits
with code 0, and a requeued ``--ckpt_path last`` run completes the budget with the frame count,
the evaluations and the metrics continuing where it stopped."""

import json
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import APPLE, ROOT, TRAINER
from tests.test_resume import BATCH, assert_metrics_cover

BUDGET = BATCH * 50


def command(run, pretrained, *extra):
    return [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER,
            "--model.pretrained", str(pretrained), "--model.budget.frames", str(BUDGET),
            "--model.evaluation.every_frames", "64000", "--model.evaluation.episodes", "32",
            "--run_dir", str(run), *extra]  # fmt: skip


def stop_mid_run(run, pretrained, signum) -> tuple[subprocess.CompletedProcess, int]:
    """Start a fit, wait until it has trained past its first evaluation, send ``signum``."""
    proc = subprocess.Popen(command(run, pretrained), cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    summary, deadline = run / "summary.json", time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if summary.exists() and len(json.loads(summary.read_text())["eval_history"]) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), BUDGET


def test_sigterm_saves_a_checkpoint_and_the_requeued_run_continues(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    stopped, _ = stop_mid_run(run, pretrained_apple, signal.SIGTERM)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    line = [x for x in stopped.stderr.splitlines() if x.startswith("lit-rl: stopped by SIGTERM")]
    assert len(line) == 1 and "RESUME=1" in line[0], stopped.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    stopped_at = int(saved["state_dict"]["env_frames"])
    assert 64000 <= stopped_at < BUDGET and f"{stopped_at:,} frames" in line[0]

    resumed = subprocess.run(command(run, pretrained_apple, "--ckpt_path", "last"), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["env_steps"] == BUDGET
    frames = [entry["env_steps"] for entry in summary["eval_history"]]
    assert frames == sorted(set(frames)) and frames[0] == 0 and frames[-1] == BUDGET
    assert any(f <= stopped_at for f in frames[1:]) and any(f > stopped_at for f in frames)
    assert_metrics_cover(run, BUDGET, frames)


def test_sigusr1_before_the_time_limit_stops_the_run_like_sigterm(pretrained_apple, tmp_path):
    """SLURM's ``--signal=USR1@90`` warning: same clean stop and checkpoint (no SLURM here, so no
    requeue is attempted)."""
    run = tmp_path / "run"
    stopped, _ = stop_mid_run(run, pretrained_apple, signal.SIGUSR1)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "lit-rl: stopped by SIGUSR1" in stopped.stderr
    summary = json.loads((run / "summary.json").read_text())
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(saved["state_dict"]["env_frames"]) >= summary["eval_history"][-1]["env_steps"]
    assert not summary["finished"]
