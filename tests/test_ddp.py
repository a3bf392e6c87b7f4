"""The multi-GPU path, exercised on the CPU: Lightning DDP over gloo with two processes."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import APPLE, ROOT, TRAINER


@pytest.mark.xdist_group("ddp")  # binds a gloo rendezvous port (tests/conftest.py)
def test_two_process_ddp_run_ends_with_identical_weights(pretrained_apple, tmp_path):
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks+:\n    - class_path: tests.ddp_probe.SaveRankWeights\n")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lit_rl.cli", "fit", *APPLE,
           "--config", str(ROOT / "configs/method/ewc.yaml"), *TRAINER,
           "--config", str(ROOT / "configs/trainer/ddp.yaml"), "--config", str(probe),
           "--model.pretrained", str(pretrained_apple), "--model.budget.frames", "25600",
           "--model.evaluation.every_frames", "12800", "--run_dir", str(run)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(run / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["frames"] == ranks[1]["frames"] == 25600
    for name, value in ranks[0]["policy"].items():
        assert torch.equal(value, ranks[1]["policy"][name]), name
    pretrained = torch.load(pretrained_apple)["state_dict"]
    moved = [n for n, v in ranks[0]["policy"].items() if not torch.equal(v, pretrained[n])]
    assert moved, "training changed no weight"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 25600 and len(summary["eval_history"]) == 3
