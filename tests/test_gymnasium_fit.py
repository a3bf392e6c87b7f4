"""A real ``lit-rl fit`` on the Gymnasium preset (configs/env/applegym.yaml) from a Stable-Baselines3
π*, with every retention method, and SAC fine-tuning of an SB3 SAC policy through the SAC trainer.

π* is trained by SB3 inside the test session (a few seconds), as the tutorial trains it
(``lit_rl.pretraining.sb3`` on the preset's FAR subspace); each fit runs 2,048 frames.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from lit_rl.cli import main
from tests.conftest import ROOT

pytest.importorskip("stable_baselines3")

PRESET = ROOT / "configs/env/applegym.yaml"
SHORT = [
    "--model.budget.frames", "2048", "--model.collection.num_envs", "8",
    "--model.collection.rollout_length", "64", "--model.collection.teacher_frames", "512",
    "--model.optimisation.minibatch_size", "256", "--model.optimisation.epochs", "1",
    "--model.evaluation.every_frames", "1024", "--model.evaluation.episodes", "4",
]  # fmt: skip
#: the loss term each method adds to metrics.csv (freeze adds none)
TERMS = {"l2": "l2", "ewc": "ewc", "bc": "bc", "ks": "ks"}


@pytest.fixture(scope="module")
def sb3_pi_star(tmp_path_factory):
    """π* for the preset: SB3 PPO trained 1,024 steps on its FAR subspace by lit_rl's recipe."""
    from lit_rl.pretraining.sb3 import train

    out = tmp_path_factory.mktemp("sb3") / "applegym.zip"
    recipe = {"algorithm": "ppo", "subspace": "far", "steps": 1024, "out": str(out),
              "kwargs": {"n_steps": 256, "batch_size": 64, "n_epochs": 1}}  # fmt: skip
    return train(PRESET, recipe)


def fit(*args: str) -> None:
    torch.set_num_threads(1)
    trainer = [
        "--config",
        str(ROOT / "configs/trainer/cpu.yaml"),
        "--config",
        str(ROOT / "configs/logger/csv.yaml"),
    ]
    main(["fit", "--config", str(ROOT / "configs/base.yaml"), *args, *trainer])


def rows(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["none", "freeze", "l2", "ewc", "bc", "ks"])
def test_fit_on_the_gymnasium_preset_with_each_method(tmp_path, sb3_pi_star, method):
    methods = [] if method == "none" else ["--config", str(ROOT / f"configs/method/{method}.yaml")]
    run = tmp_path / "run"
    fit(
        "--config",
        str(PRESET),
        *methods,
        *SHORT,
        "--model.pretrained",
        str(sb3_pi_star),
        "--run_dir",
        str(run),
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 2048 and summary["method"] == method
    assert set(summary["eval"]) == {"close", "far"}
    assert summary["pretrained"]["far"]["episodes"] == 4
    logged = rows(run)
    visits = [
        float(r["train/visit/close"]) + float(r["train/visit/far"]) for r in logged if r["train/visit/close"]
    ]
    assert visits and all(abs(v - 1.0) < 1e-6 for v in visits)  # info["phase"] names every frame
    if method in TERMS:
        assert any(r.get(f"train/loss_{TERMS[method]}") for r in logged)


def test_sac_fine_tunes_an_sb3_sac_policy(tmp_path):
    """The SAC trainer on a continuous Gymnasium env (Pendulum, CLOSE hanging, FAR near the top
    by reset options) from an SB3 SAC π*."""
    from stable_baselines3 import SAC

    zip_path = tmp_path / "sac.zip"
    SAC("MlpPolicy", "Pendulum-v1", learning_starts=32, seed=0, device="cpu").learn(64).save(zip_path)
    preset = {
        "preset": "pendulum_test",
        "model": {
            "class_path": "lit_rl.training.sac.SACFineTuning",
            "init_args": {
                "scenario": {
                    "class_path": "lit_rl.scenarios.Gymnasium",
                    "init_args": {
                        "env_id": "Pendulum-v1", "algorithm": "sac",
                        "subspaces": {"close": {"reset": {"x_init": 3.1, "y_init": 0.5}},
                                      "far": {"reset": {"x_init": 0.3, "y_init": 0.5}}},
                    },
                },
                "pretrained": str(zip_path), "budget": {"frames": 512, "learning_starts": 128},
                "collection": {"num_envs": 4, "rollout_length": 64}, "replay": {"start_steps": 0},
                "sac": {"batch_size": 32, "updates_per_frame": 0.05},
                "evaluation": {"every_frames": 256, "episodes": 2}, "loglik": {"every_frames": 0},
            },
        },
    }  # fmt: skip
    config = tmp_path / "pendulum.yaml"
    config.write_text(yaml.safe_dump(preset))
    run = tmp_path / "run"
    fit("--config", str(config), "--run_dir", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 512 and set(summary["eval"]) == {"close", "far"}
    assert any(r.get("train/loss_qvalue") for r in rows(run))


def test_ppo_fine_tunes_an_sb3_ppo_policy_with_continuous_actions(tmp_path):
    """PPO's Gaussian actor on Pendulum from an SB3 PPO π*, with L2 towards it."""
    from stable_baselines3 import PPO

    zip_path = tmp_path / "ppo.zip"
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu").save(
        zip_path
    )
    scenario = {
        "class_path": "lit_rl.scenarios.Gymnasium",
        "init_args": {
            "env_id": "Pendulum-v1",
            "subspaces": {"close": {"reset": None}, "far": {"reset": {"x_init": 0.3, "y_init": 0.5}}},
            "max_episode_steps": 50,
        },
    }
    config = tmp_path / "pendulum.yaml"
    config.write_text(yaml.safe_dump({"preset": "pendulum_ppo_test", "model": {"scenario": scenario}}))
    run = tmp_path / "run"
    fit("--config", str(config), "--config", str(ROOT / "configs/method/l2.yaml"), *SHORT,
        "--model.pretrained", str(zip_path), "--run_dir", str(run))  # fmt: skip
    assert any(r.get("train/loss_l2") for r in rows(run))
    assert json.loads((run / "summary.json").read_text())["method"] == "l2"
