"""``make study ENV=minihack`` (lit_rl.study): the smoke study runs every stage and every method to a
report, its FAR hand-overs replay into FAR, and a rerun skips what is done."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_rl import study
from lit_rl.envs.minihack import MiniHackBatchEnv, load_start_states

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["configs/study/minihack.yaml", "configs/study/minihack_smoke.yaml"]
METHODS = ("none", "ks", "bc", "ewc")


def run_study(tmp_path: Path, **changes) -> subprocess.CompletedProcess:
    overlay = tmp_path / "root.yaml"
    overlay.write_text(yaml.safe_dump({"root": str(tmp_path / "study"), **changes}))
    configs = [arg for path in [*STUDY, str(overlay)] for arg in ("--config", path)]
    command = [sys.executable, "-m", "lit_rl.study", *configs]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_minihack_study_commands_compose_the_preset_and_its_hand_overs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = study.load_config([Path(p) for p in STUDY])
    config["root"] = str(tmp_path)
    runner = study.Study(config)
    args = runner.finetune_args("bc", 2, tmp_path / "run", resume=False)
    configs = [args[i + 1] for i, arg in enumerate(args) if arg == "--config"]
    assert configs[:2] == ["configs/base.yaml", "configs/env/minihack.yaml"]
    assert "configs/method/bc.yaml" in configs
    start = args.index("--model.scenario.init_args.start_states")
    assert args[start + 1] == str(tmp_path / "data" / "start_states_far.json")
    del config["pretrain"]["min_far_success"]
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="min_far_success"):
        study.load_config([incomplete])


def test_minihack_smoke_study_runs_every_stage_and_method(tmp_path):
    """FAR hand-overs → RL π* → reference → four methods → report; a rerun only redraws it."""
    result = run_study(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    root = tmp_path / "study"
    states = load_start_states(root / "data" / "start_states_far.json")
    env = MiniHackBatchEnv(len(states), seed=0, start_states=states)
    assert env.reset()["phase"].tolist() == [1] * len(states)  # the saved hand-overs replay into FAR
    env.close()
    assert (root / "pretrained" / "minihack.pt").is_file()
    report = (root / "reports" / "report.md").read_text()
    section = report.split("## minihack\n")[1]
    for method in METHODS:
        assert f"\n| {method} | 1 | 256 |" in section, method
    for subspace in ("close", "far"):
        assert f"{subspace}_final" in section
        assert (root / "reports" / f"minihack_{subspace}.png").is_file()
    assert "| random policy |" in section and "| π* (not fine-tuned) |" in section
    for figure in ("minihack_phases.png", "minihack_far_visits.png"):
        assert (root / "reports" / figure).is_file()
    assert set(json.loads((root / "study_times.json").read_text())) == set(study.STAGES)

    again = run_study(tmp_path)
    assert again.returncode == 0 and "$ " not in again.stdout
    for stage in ("record", "pretrain", "reference"):
        assert f"{stage}: done" in again.stdout
