"""`make finetune` as a user runs it: bootstraps π* when missing, writes the run folder, and rejects
an unknown METHOD at once. Runs in a copy of the Makefile and configs so the checkout stays clean."""

import json
import os
import shutil
import subprocess
import time

from tests.conftest import ROOT


def project_copy(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def make(cwd, *args, timeout=600):
    env = {**os.environ, "VENV": str(ROOT / ".venv")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_finetune_end_to_end_with_a_tiny_budget(tmp_path):
    project = project_copy(tmp_path)
    (project / "configs/pretrain/apple.yaml").write_text(
        (ROOT / "configs/pretrain/apple.yaml").read_text().replace("400000", "64000")
    )
    result = make(project, "finetune", "METHOD=ewc", "STEPS=12800", "LOGGER=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (project / "pretrained/apple.pt").is_file()
    summary = json.loads((project / "runs/apple-ewc-s0/summary.json").read_text())
    assert summary["env_steps"] == 12800 and set(summary["eval"]) == {"close", "far"}
    assert "runs/apple-ewc-s0/summary.json" in result.stdout


def test_unknown_method_fails_fast_with_one_line(tmp_path):
    project = project_copy(tmp_path)
    start = time.monotonic()
    result = make(project, "finetune", "METHOD=bogus", timeout=30)
    assert time.monotonic() - start < 10
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown METHOD 'bogus'" in lines[0]
    for method in ("none", "ewc", "bc", "ks", "l2", "freeze"):
        assert method in lines[0]


def test_unknown_env_fails_fast(tmp_path):
    result = make(project_copy(tmp_path), "finetune", "ENV=pong", timeout=30)
    assert result.returncode != 0 and "unknown ENV 'pong'" in result.stderr
