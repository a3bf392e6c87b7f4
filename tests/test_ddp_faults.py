"""Issue 27, point 1: under DDP (2 gloo ranks on the CPU) a failure on one rank stops every rank
within a bounded time, with one line naming the rank and the cause, a non-zero exit, and both
checkpoints (``last.ckpt``, ``last.prev.ckpt``) intact.

Each fault is injected on one rank only by a test-only class (tests/fault_probes.py); the other
rank runs the real code and has to notice by itself. The runs are tiny: 16 envs × 50 steps per batch
per rank, a checkpoint every 2 batches, the fault from the 8th batch on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_rl.checkpoint_io import unreadable_reason
from lit_rl.safe_load import safe_load
from tests.conftest import APPLE, ROOT, TRAINER

pytestmark = pytest.mark.xdist_group("ddp")

BATCH = 16 * 50
TINY = ["--model.collection.num_envs", "16", "--model.collection.rollout_length", "50",
        "--model.optimisation.minibatch_size", str(BATCH), "--model.budget.frames", str(10 * BATCH),
        "--model.evaluation.every_frames", str(100 * BATCH), "--model.evaluation.episodes", "8"]  # fmt: skip
#: the fault starts with the 8th batch's collection (env step 351); Lightning fetches one batch
#: ahead, so the checkpoints of batches 2 and 4 are on disk by then
FAULTY = ["--model.scenario", "tests.fault_probes.FaultyApple", "--model.scenario.after", "351"]
#: seconds every rank has to end after the run's first process exits (the watchdog's grace is 60)
ALL_GONE_S = 30


def ddp_command(run: Path, pretrained: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER,
            "--trainer.callbacks.every_n_train_steps", "2",  # the checkpoint callback (listed last)
            "--config", str(ROOT / "configs/trainer/ddp.yaml"), *TINY,
            "--model.pretrained", str(pretrained), "--run_dir", str(run), *extra]  # fmt: skip


def processes_of(run: Path) -> list[int]:
    """Live processes whose command line names ``run`` (the ranks, their workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if str(run) in command and state != "Z":
            found.append(int(entry.name))
    return found


def run_ddp(command: list[str], run: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the DDP command; then every process of the run must be gone within ``ALL_GONE_S``.
    Whatever happens, nothing of the run is left running (its session is killed)."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
        deadline = time.monotonic() + ALL_GONE_S
        while processes_of(run) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_of(run)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not left, f"ranks still running {ALL_GONE_S} s after the run's exit: {left}"
    return subprocess.CompletedProcess(command, proc.returncode, "", stderr)


def frames_of(path: Path) -> int:
    return int(safe_load(path)["state_dict"]["env_frames"])


def assert_stopped_cleanly(result, run: Path, rank: int, cause: str, checkpoints: tuple[int, int]) -> None:
    """Non-zero exit; the failed rank's one line names it and the cause; both checkpoints load and
    hold the frames of the batches they were saved at; no temporary file is left."""
    assert result.returncode != 0, result.stderr[-3000:]
    lines = [
        line for line in result.stderr.splitlines() if line.startswith(f"lit-rl: error: rank {rank} failed:")
    ]
    assert len(lines) == 1 and cause in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    folder = run / "checkpoints"
    last, previous = folder / "last.ckpt", folder / "last.prev.ckpt"
    assert unreadable_reason(last) is None and unreadable_reason(previous) is None
    assert (frames_of(last), frames_of(previous)) == tuple(n * BATCH for n in checkpoints)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_full_disk_on_rank_0_during_a_save_stops_both_ranks(pretrained_apple, tmp_path):
    """Only rank 0 writes checkpoints; rank 1 waits for it at Lightning's barrier after the save."""
    probe = tmp_path / "disk.yaml"
    probe.write_text("trainer:\n  plugins:\n    - class_path: tests.fault_probes.DiskFullAtSave\n"
                     "      init_args: {rank: 0, at_save: 3}\n")  # fmt: skip
    run = tmp_path / "run"
    result = run_ddp(ddp_command(run, pretrained_apple, "--config", str(probe)), run)
    assert_stopped_cleanly(result, run, 0, "No space left on device", (4, 2))


def test_a_simulator_that_cannot_be_restarted_on_rank_1_stops_both_ranks(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    command = ddp_command(run, pretrained_apple, *FAULTY, "--model.scenario.fault", "crash",
                          "--model.budget.max_simulator_restarts", "0")  # fmt: skip
    result = run_ddp(command, run)
    assert_stopped_cleanly(result, run, 1, "the simulator failed 1 times", (4, 2))


def test_an_exception_in_the_collector_on_rank_1_stops_both_ranks(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    result = run_ddp(ddp_command(run, pretrained_apple, *FAULTY, "--model.scenario.fault", "bug"), run)
    assert_stopped_cleanly(result, run, 1, "ValueError: simulated bug in the collector", (4, 2))
    assert "simulated bug" in (run / "errors" / "rank1.txt").read_text()  # the traceback is kept


def test_a_nan_budget_spent_on_rank_1_stops_both_ranks_at_the_same_update(pretrained_apple, tmp_path):
    """Rank 1's losses turn NaN from its 7th batch on. Both ranks skip the same updates (skipping
    on rank 1 alone left rank 0 in the gradient all-reduce for ever) and stop together."""
    run = tmp_path / "run"
    command = ddp_command(run, pretrained_apple, *FAULTY, "--model.scenario.fault", "nan",
                          "--model.budget.max_nonfinite_updates", "2")  # fmt: skip
    result = run_ddp(command, run, timeout=240)
    assert_stopped_cleanly(result, run, 0, "2 consecutive non-finite losses on rank 1", (6, 4))
    assert "lit-rl: error: rank 1 failed:" in result.stderr


def test_a_failed_rank_whose_clean_up_hangs_is_ended_by_the_watchdog(pretrained_apple, tmp_path):
    """Rank 1 fails and its clean-up never returns: the watchdog ends it after ``grace_s`` (5 s
    here), then rank 0 notices at its next collective. Without the watchdog both wait for ever."""
    probe = tmp_path / "hang.yaml"
    probe.write_text("trainer:\n  callbacks+:\n    - class_path: callbacks.RankFaults\n"
                     "      init_args: {grace_s: 5}\n"
                     "    - class_path: tests.fault_probes.HangingCleanup\n")  # fmt: skip
    run = tmp_path / "run"
    command = ddp_command(
        run, pretrained_apple, *FAULTY, "--model.scenario.fault", "bug", "--config", str(probe)
    )
    result = run_ddp(command, run, timeout=180)
    assert_stopped_cleanly(result, run, 1, "ValueError: simulated bug in the collector", (4, 2))
    assert "clean-up took over 5 s after the failure; ending the process" in result.stderr
