"""The Lightning CLI: resolved configs, a tiny real fit, and one-line errors for bad input."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_rl.cli import main
from tests.conftest import APPLE, ROOT, TRAINER, fit

TINY = ["--model.budget.frames", "12800", "--model.evaluation.every_frames", "6400"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lit_rl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_print_config_resolves_the_overlay():
    result = run_cli("fit", *APPLE, "--config", str(ROOT / "configs/method/ewc.yaml"), *TRAINER,
                     "--print_config")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "class_path: lit_rl.scenarios.AppleRetrieval" in result.stdout
    assert "fisher: per_sample" in result.stdout


def test_tiny_fit_writes_the_run_folder(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    fit(*TINY, "--config", str(ROOT / "configs/method/ewc.yaml"),
        "--model.pretrained", str(pretrained_apple), "--run_dir", str(run))  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "ewc" and summary["finished"]
    assert summary["env_steps"] == 12800
    assert set(summary["eval"]) == {"close", "far"}
    assert summary["pretrained"]["env_steps"] == 0
    assert [e["env_steps"] for e in summary["eval_history"]] == [0, 6400, 12800]
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(ckpt["state_dict"]["env_frames"]) == 12800
    assert bool(ckpt["state_dict"]["retention.ewc.prepared"])


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lit-rl: error")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["--config", str(ROOT / "configs/method/ewc.yaml"), "--model.retention.init_args.cof", "3"],
            ["cof"],
        ),
        (["--model.budget.frames", "0"], ["budget.frames = 0 is not accepted: expected an integer > 0"]),
        (
            ["--model.optimisation.lr", "abc"],
            ["optimisation.lr = 'abc' is not accepted: expected a number > 0"],
        ),
        (["--model.advantage.gamma", "1.5"], ["advantage.gamma = 1.5", "in [0, 1]"]),
        (["--model.collection.num_envs", "-4"], ["collection.num_envs = -4", "integer > 0"]),
        (
            ["--model.advantage.estimator", "foo"],
            ["advantage.estimator = foo is not accepted: expected one of gae, vtrace"],
        ),
        (["--model.pretrained", "missing/apple.pt"], ["not found", "make pretrain"]),
        (["--model.budget_frames", "100"], ["--model.budget_frames moved to model.budget.frames"]),
        (["--model.collection", "async"], ["--model.collection moved to model.collection.mode"]),
        (["--model.scenario.init_args.policy", "cnn"], ["unknown apple policy"]),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, needles):
    one_line_error(run_cli("fit", *APPLE, *TRAINER, "--run_dir", str(tmp_path / "r"), *args), *needles)
    assert not (tmp_path / "r" / "summary.json").exists()


def test_an_old_flat_key_in_a_config_names_its_new_place(tmp_path):
    """Settings are grouped by concern; a config written for the flat layout fails in one line."""
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  num_envs: 8\n  eval_episodes: 4\n")
    one_line_error(
        run_cli("fit", *APPLE, "--config", str(old), *TRAINER, "--run_dir", str(tmp_path / "r")),
        f"{old}: model.num_envs moved to model.collection.num_envs",
    )
    assert not (tmp_path / "r").exists()


def test_config_typo_in_a_file_is_one_line(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  lr_typo: 3\n")
    one_line_error(run_cli("fit", *APPLE, "--config", str(typo), *TRAINER), "lr_typo")


def test_checkpoint_of_another_model_is_rejected(pretrained_apple, tmp_path):
    result = run_cli("fit", *APPLE, *TRAINER, "--run_dir", str(tmp_path / "r"),
                     "--model.pretrained", str(pretrained_apple),
                     "--model.scenario.init_args.policy", "mlp")  # fmt: skip
    one_line_error(result, "holds a policy for")


def test_existing_run_folder_needs_resume(pretrained_apple, tmp_path):
    run = tmp_path / "run"
    fit(*TINY, "--model.pretrained", str(pretrained_apple), "--run_dir", str(run))
    before = (run / "summary.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *APPLE, *TRAINER, *TINY, "--model.pretrained", str(pretrained_apple),
              "--run_dir", str(run)])  # fmt: skip
    assert exit_info.value.code == 2
    assert (run / "summary.json").read_text() == before


def test_make_eval_reproduces_the_runs_latest_evaluation(pretrained_apple, tmp_path):
    """`make eval CKPT=<run>/checkpoints/last.ckpt` rebuilds the model from the run's own
    config.yaml and evaluates it with the same evaluator (episodes, environment and action seeds):
    every metric of the run's latest summary.json evaluation comes out identical."""
    run = tmp_path / "run"
    fit(*TINY, "--config", str(ROOT / "configs/method/ewc.yaml"),
        "--model.pretrained", str(pretrained_apple), "--run_dir", str(run))  # fmt: skip
    result = subprocess.run(
        ["make", "--no-print-directory", "eval", f"CKPT={run / 'checkpoints' / 'last.ckpt'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "VENV": str(Path(sys.executable).parents[1])},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # the metrics land beside the evaluated run, not in a shared runs/ folder
    rows = list(csv.DictReader((run / "eval" / "metrics.csv").open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("eval/") and v}
    latest = json.loads((run / "summary.json").read_text())["eval"]
    assert latest["close"]["episodes"] == 256
    for subspace, metrics in latest.items():
        for name, value in metrics.items():
            assert logged[f"eval/{subspace}/{name}"] == pytest.approx(value, rel=1e-6), (subspace, name)
