"""Issue 27, point 3: background evaluation where it was only reasoned through.

- Under DDP (2 gloo ranks): only rank 0 runs an evaluation worker and records evaluations; each is
  logged once, in order, with the numbers a foreground DDP run logs at the same frames.
- Under SIGTERM (a preemption) with an evaluation in flight: the run stops with exit 0, its
  ``last.ckpt`` holds the snapshot still in flight, and the resumed run (the requeue) evaluates it
  and logs it once, in order, with the numbers of a run that was never stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lit_rl.safe_load import safe_load
from tests.conftest import APPLE, ROOT, TRAINER
from tests.test_background_evaluation import logged_rows
from tests.test_ddp_faults import run_ddp

BATCH = 16 * 50
SETTINGS = ["--model.collection.num_envs", "16", "--model.collection.rollout_length", "50",
            "--model.optimisation.minibatch_size", str(BATCH), "--model.budget.frames", str(12 * BATCH),
            "--model.evaluation.every_frames", str(4 * BATCH),
            "--model.evaluation.episodes", "256"]  # fmt: skip
EVALUATED = [0, 4 * BATCH, 8 * BATCH, 12 * BATCH]


def command(run, pretrained, *extra) -> list[str]:
    return [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE, *TRAINER, *SETTINGS,
            "--model.pretrained", str(pretrained), "--run_dir", str(run), *extra]  # fmt: skip


def probe(tmp_path, name: str, init_args: str = "") -> list[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"trainer:\n  callbacks+:\n    - class_path: tests.fault_probes.{name}\n{init_args}")
    return ["--config", str(path)]


def eval_frames(run) -> list[int]:
    return [int(float(frames)) for _, frames in logged_rows(run, "eval/env_frames")]


@pytest.mark.slow  # two 2-rank runs
@pytest.mark.xdist_group("ddp")
def test_background_evaluation_under_ddp_is_logged_once_by_rank_0_in_order(pretrained_apple, tmp_path):
    ddp = ["--config", str(ROOT / "configs/trainer/ddp.yaml"), *probe(tmp_path, "RankEvaluations")]
    runs = {}
    for mode in ("true", "false"):
        run = tmp_path / f"background-{mode}"
        result = run_ddp(command(run, pretrained_apple, *ddp, "--model.evaluation.background", mode), run)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[mode] = run
    run = runs["true"]
    ranks = [json.loads((run / f"evaluations-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == {"worker": True, "recorded": EVALUATED}
    assert ranks[1] == {"worker": False, "recorded": []}
    assert eval_frames(run) == EVALUATED  # one row per evaluation, in order
    background = json.loads((run / "summary.json").read_text())["eval_history"]
    foreground = json.loads((runs["false"] / "summary.json").read_text())["eval_history"]
    assert background == foreground
    assert logged_rows(run, "eval/close/return_mean") == logged_rows(runs["false"], "eval/close/return_mean")


def test_sigterm_with_an_evaluation_in_flight_saves_it_and_the_requeued_run_logs_it(
    pretrained_apple, tmp_path
):
    run = tmp_path / "preempted"
    stop = probe(tmp_path, "TermWithEvaluationInFlight", f"      init_args: {{at_frames: {4 * BATCH}}}\n")
    stopped = subprocess.run(command(run, pretrained_apple, "--model.evaluation.background", "true", *stop),
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "lit-rl: stopped by SIGTERM" in stopped.stderr
    state = safe_load(run / "checkpoints" / "last.ckpt")
    evaluation = next(s for name, s in state["callbacks"].items() if "SubspaceEvaluation" in name)
    in_flight = [job["env_steps"] for job in evaluation["in_flight"]]
    logged = [entry["env_steps"] for entry in evaluation["history"]]
    stopped_at = int(state["state_dict"]["env_frames"])
    assert logged + in_flight == [0, 4 * BATCH] and in_flight and stopped_at >= 4 * BATCH

    resumed = subprocess.run(command(run, pretrained_apple, "--model.evaluation.background", "true",
                                     "--ckpt_path", "last"),
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and [e["env_steps"] for e in summary["eval_history"]] == EVALUATED
    assert eval_frames(run) == EVALUATED

    never_stopped = tmp_path / "never-stopped"
    result = subprocess.run(command(never_stopped, pretrained_apple), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reference = json.loads((never_stopped / "summary.json").read_text())["eval_history"]
    assert summary["eval_history"][:2] == reference[:2]  # the snapshots taken before the stop
