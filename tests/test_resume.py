"""A run killed with SIGKILL resumes from its last checkpoint and completes the whole budget."""

import csv
import json
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import APPLE, ROOT, TRAINER

BUDGET = 384_000  # 60 batches; a checkpoint every 20 optimiser steps (128,000 frames)
BATCH = 6400  # frames per batch on apple (64 envs × 100 steps)


def logged_frames(run) -> tuple[list[int], list[int]]:
    """Frame counts of the training rows and of the evaluation rows in ``<run>/metrics.csv``."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [int(float(r["train/env_frames"])) for r in rows if r.get("train/env_frames")]
    evals = [int(float(r["eval/env_frames"])) for r in rows if r.get("eval/env_frames")]
    return train, evals


def assert_metrics_cover(run, budget: int, eval_frames: list[int]) -> None:
    """One training row per batch up to the budget and one row per evaluation: none twice, none
    missing, across every kill and resume."""
    train, evals = logged_frames(run)
    assert train == list(range(BATCH, budget + 1, BATCH)), "training rows duplicated or missing"
    assert evals == eval_frames, "evaluation rows duplicated or missing"


def command(run, pretrained, *extra):
    return [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER,
            "--config", str(ROOT / "configs/method/ks.yaml"),
            "--model.pretrained", str(pretrained), "--model.budget.frames", str(BUDGET),
            "--model.evaluation.every_frames", "64000", "--run_dir", str(run), *extra]  # fmt: skip


def test_kill_and_resume_continues_the_frame_count(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command(run, pretrained_apple), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint was written before the kill"
    killed_at = int(torch.load(last, weights_only=False)["state_dict"]["env_frames"])
    assert 0 < killed_at < BUDGET
    killed_coef = float(torch.load(last, weights_only=False)["state_dict"]["retention.ks.coef"])

    resumed = subprocess.run(command(run, pretrained_apple, "--ckpt_path", "last"), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    frames = [entry["env_steps"] for entry in summary["eval_history"]]
    assert summary["finished"] and summary["env_steps"] == BUDGET
    assert frames[0] == 0 and frames == sorted(set(frames)) and frames[-1] == BUDGET
    assert summary["pretrained"]["env_steps"] == 0
    assert_metrics_cover(run, BUDGET, frames)
    final = torch.load(last, weights_only=False)["state_dict"]
    assert float(final["retention.ks.coef"]) < killed_coef, "the KS schedule continued"
