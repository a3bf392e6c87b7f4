"""The small NetHack chain: record → behavioural cloning → fine-tune (lit-rl fit) → CLOSE/FAR eval,
and one-line errors on bad inputs (the model_115 converter: tests/test_model115.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from lit_rl.cli import main as lit_rl_main
from lit_rl.models.policy_io import load_policy
from lit_rl.pretraining.behavioural_cloning import BehaviouralCloning
from lit_rl.recording.nethack_games import record_games, record_start_states
from lit_rl.scenarios.nethack import NetHack, read_start_states
from lit_rl.training.settings import Export

ROOT = Path(__file__).resolve().parents[1]
NUM_ACTIONS = 121


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three short expert games in NLD layout plus two start states at Dlvl >= 2 (≈10 s)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nethack") / "data"
    record_games(out, games=3, seed=1, max_steps=400)
    record_start_states(out, [2], count=2, seed=1, max_steps=1500)
    return out


def bc_module(data: Path, **overrides) -> BehaviouralCloning:
    settings = dict(batch_size=3, seq_length=32, lr=3e-3, export=Export(policy=None), seed=0)
    settings.update(overrides)
    return BehaviouralCloning(NetHack(size="tiny", data_dir=str(data)), **settings)


def evaluate_bc(module: BehaviouralCloning, batches: int = 6) -> tuple[float, float]:
    """Mean BC loss and accuracy over the first ``batches`` chunks of a fresh, unshuffled pass."""
    module.eval()
    module._hidden = None
    loader = iter(module.train_dataloader())
    losses, accuracies = [], []
    with torch.no_grad():
        for _ in range(batches):
            loss, accuracy = module.bc_loss(next(loader))
            losses.append(loss.item())
            accuracies.append(accuracy.item())
    module._hidden = None
    module.train()
    return sum(losses) / batches, sum(accuracies) / batches


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory) -> tuple[Path, dict]:
    """π* cloned for 60 steps; returns its export and BC loss/accuracy before and after."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bc")
    module = bc_module(dataset, export=Export(policy=str(out / "nethack.pt")))
    before = evaluate_bc(module)
    trainer = Trainer(max_steps=60, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(out))  # fmt: skip
    trainer.fit(module)
    after = evaluate_bc(module)
    return out / "nethack.pt", {"before": before, "after": after}


def test_bc_pretraining_reduces_loss_and_beats_random(pretrained):
    """Judged on BC accuracy, not score: 60 updates on three games give a noisy game score."""
    policy_file, stats = pretrained
    (loss_before, _), (loss_after, accuracy_after) = stats["before"], stats["after"]
    assert loss_after < loss_before - 0.5
    assert accuracy_after > 10 / NUM_ACTIONS  # a uniformly random policy scores 1/121
    scenario = NetHack(size="tiny")
    load_policy(policy_file, scenario.make_policy().modules(), scenario.describe())


def test_far_env_starts_at_the_requested_depth(dataset):
    scenario = NetHack(size="tiny", data_dir=str(dataset), far_dlvl=2)
    env = scenario.make_env(2, "far", seed=0)
    td = env.reset()
    assert (td["dlvl"] >= 2).all()
    assert td["is_init"].all() and (td["recurrent_state_h"] == 0).all()
    close = scenario.make_env(2, "close", seed=0).reset()
    assert (close["dlvl"] == 1).all()
    assert scenario.visitation(torch.cat([td, close]))["far"] == 0.5


def test_actor_replays_sequences_like_the_collector_stepped_them(dataset, pretrained):
    """Sequence replay from the stored first-step LSTM state reproduces the collected log-probs,
    across episode resets inside a row (5-step episodes in a 12-step rollout)."""
    scenario = NetHack(size="tiny", data_dir=str(dataset), max_episode_steps=5)
    policy = scenario.make_policy()
    load_policy(pretrained[0], policy.modules(), scenario.describe())
    env = scenario.make_env(2, "close", seed=0, training=True)
    with torch.no_grad():
        rollout = env.rollout(12, policy.actor, break_when_any_done=False)
        replay = policy.actor.get_dist(rollout.copy()).log_prob(rollout["action"])
    assert rollout.shape == (2, 12) and rollout["is_init"][:, 1:].any()
    torch.testing.assert_close(replay, rollout["action_log_prob"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("methods", [["ks"], ["bc", "ewc"]])
def test_tiny_fit_runs_end_to_end(dataset, pretrained, tmp_path, methods):
    """KS with π*'s own recurrent state in the collector; BC and EWC reading the recorded games
    (the dataset index BC pre-training built in ``data_dir``)."""
    assert (dataset / "index.db").is_file()
    run = tmp_path / "run"
    method_configs = [arg for m in methods for arg in ("--config", str(ROOT / f"configs/method/{m}.yaml"))]
    lit_rl_main([
        "fit",
        "--config", str(ROOT / "configs/base.yaml"),
        "--config", str(ROOT / "configs/env/nethack.yaml"),
        *method_configs,
        "--config", str(ROOT / "configs/trainer/cpu.yaml"),
        "--config", str(ROOT / "configs/logger/csv.yaml"),
        "--model.scenario.init_args.data_dir", str(dataset),
        "--model.scenario.init_args.max_episode_steps", "20",
        "--model.pretrained", str(pretrained[0]),
        "--model.budget.frames", "128",
        "--model.collection.num_envs", "4",
        "--model.collection.rollout_length", "16",
        "--model.optimisation.minibatch_size", "32",
        *(["--model.retention.init_args.fisher_states", "64"] if "ewc" in methods else []),
        "--run_dir", str(run),
    ])  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env"] == "nethack" and set(summary["method"].split("+")) == set(methods)
    assert summary["env_steps"] == 128 and summary["finished"]
    assert set(summary["eval"]) == {"close", "far"}
    assert summary["pretrained"]["far"]["episodes"] == 8
    metrics = (run / "metrics.csv").read_text().splitlines()[0]
    assert all(f"train/loss_{m}" in metrics for m in methods) and "train/visit/far" in metrics


def bc_cli_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        lit_rl_main(["fit", "--config", str(ROOT / "configs/pretrain/nethack.yaml"), "--trainer.max_steps",
                     "1", "--trainer.enable_progress_bar", "false", *args])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_dataset_is_one_line(tmp_path, capsys):
    err = bc_cli_error(capsys, "--model.scenario.init_args.data_dir", str(tmp_path / "nowhere"),
                       "--run_dir", str(tmp_path / "run"))  # fmt: skip
    assert "make data ENV=nethack" in err


def test_empty_selection_is_one_line(dataset, tmp_path, capsys):
    err = bc_cli_error(capsys, "--model.scenario.init_args.data_dir", str(dataset),
                       "--model.scenario.init_args.role", "wizard",
                       "--model.scenario.init_args.dataset_index", str(tmp_path / "index.db"),
                       "--run_dir", str(tmp_path / "run"))  # fmt: skip
    assert "no games" in err


def test_start_states_are_saved_as_replayed(dataset, tmp_path):
    """The recorder saves raw-key prefixes under their format mark; older files ask for a re-record."""
    recorded = dataset / "start_states_dlvl2.json"
    payload = json.loads(recorded.read_text())
    assert payload["format"] == "raw_keys" and len(payload["start_states"]) == 2
    assert all(state.dlvl >= 2 for state in read_start_states(recorded))
    old = tmp_path / "start_states_dlvl2.json"
    old.write_text(json.dumps(payload["start_states"]))  # the recorder's earlier layout
    with pytest.raises(ValueError, match="make data ENV=nethack") as error:
        read_start_states(old)
    assert "\n" not in str(error.value)


def test_missing_start_states_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data ENV=nethack"):
        NetHack(data_dir=str(tmp_path), far_dlvl=4).make_env(1, "far", seed=0)


def test_retention_methods_read_nethack_batches(dataset, pretrained):
    """KS on [rows, time] rollouts, BC replay and the per-sample EWC Fisher on flat states."""
    from lit_rl.retention.anchored import per_sample_fisher
    from lit_rl.retention.base import policy_logits, teacher_student_kl

    scenario = NetHack(size="tiny", data_dir=str(dataset))
    policy = scenario.make_policy()
    load_policy(pretrained[0], policy.modules(), scenario.describe())
    env = scenario.make_env(2, "far", seed=0, training=True)
    with torch.no_grad():
        rollout = env.rollout(6, policy.actor, break_when_any_done=False)
    kl = teacher_student_kl(policy_logits(policy.actor, rollout), policy_logits(policy.actor, rollout))
    assert kl.abs().item() < 1e-5
    flat = rollout.reshape(-1)
    assert policy_logits(policy.actor, flat).shape == (12, NUM_ACTIONS)
    fisher = per_sample_fisher(policy.actor, flat, batch_size=6)
    head = [v for k, v in fisher.items() if k.endswith("net.policy.weight")]
    assert head and head[0].sum() > 0
    assert all(torch.isfinite(v).all() for v in fisher.values())


def test_training_envs_clip_the_reward_and_evaluation_envs_do_not(dataset):
    """Training environments clip the reward to ±10 (paper); evaluation sees the raw score delta."""
    scenario = NetHack(data_dir=str(dataset))
    assert scenario.make_env(1, "close", seed=0, training=True).base_env.clip_reward == 10
    assert scenario.make_env(1, "close", seed=0).base_env.clip_reward is None
