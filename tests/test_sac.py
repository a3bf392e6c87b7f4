"""SAC fine-tuning on RoboticSequence (issue 17): the Gaussian Fisher, the actor-only retention
terms, episodic memory across a checkpoint round trip, and the real ``lit-rl fit`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from lit_rl.cli import main
from lit_rl.models.policy_io import save_policy
from lit_rl.retention.gaussian import EpisodicMemory, GaussianBC, GaussianEWC, gaussian_fisher
from lit_rl.scenarios.robotic import RoboticSequence
from lit_rl.training.sac import Replay, SACFineTuning, SoftActorCritic

ROOT = Path(__file__).resolve().parents[1]
OBS = 44


class TinyGaussian(nn.Module):
    """μ = w·x + b, σ = exp(u·x + c): one action dimension, Fisher known in closed form."""

    def __init__(self, n: int):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(n)), nn.Parameter(torch.randn(()))
        self.u, self.c = nn.Parameter(0.3 * torch.randn(n)), nn.Parameter(torch.randn(()))

    def forward(self, observation, stage):
        loc = observation @ self.w + self.b
        scale = torch.exp(observation @ self.u + self.c)
        return loc.unsqueeze(-1), scale.unsqueeze(-1)


def test_gaussian_fisher_matches_the_hand_computation():
    """((∂μ/∂θ)/σ)² + 2((∂σ/∂θ)/σ)² averaged over states: for μ = w·x + b and σ = exp(u·x + c),
    ∂μ/∂w = x, ∂μ/∂b = 1, ∂σ/∂u = σx, ∂σ/∂c = σ, so F_w = E[x²/σ²], F_b = E[1/σ²], F_u = 2E[x²],
    F_c = 2. (Drop the 1/σ or the factor 2 and this fails.)"""
    torch.manual_seed(0)
    net = TinyGaussian(3)
    x = torch.randn(10, 3)
    states = TensorDict({"observation": x, "stage": torch.zeros(10, dtype=torch.long)}, [10])
    fisher = gaussian_fisher(net, states, batch_size=4)  # 4 does not divide 10: uneven chunks
    with torch.no_grad():
        sigma = torch.exp(x @ net.u + net.c)
    torch.testing.assert_close(fisher["w"], (x**2 / sigma[:, None] ** 2).mean(0))
    torch.testing.assert_close(fisher["b"], (1 / sigma**2).mean())
    torch.testing.assert_close(fisher["u"], 2 * (x**2).mean(0))
    torch.testing.assert_close(fisher["c"], torch.tensor(2.0))


def tiny_module(tmp_path: Path, retention, buffer_size: int = 1000) -> SACFineTuning:
    """A small SAC module whose π* is a saved random policy (retention methods need one)."""
    scenario = RoboticSequence(hidden=8, depth=2, pretraining_buffer=None)
    torch.manual_seed(1)
    source = SACFineTuning(scenario)
    path = tmp_path / "pi.pt"
    save_policy(path, source.exported, scenario.describe())
    return SACFineTuning(
        scenario,
        pretrained=str(path),
        retention=retention,
        replay=Replay(buffer_size=buffer_size),
        sac=SoftActorCritic(batch_size=16),
    )


def pi_star_transitions(n: int, marker: float = 1000.0) -> TensorDict:
    """Fake π* transitions (FAR stages), each carrying its number in the reward."""
    return TensorDict(
        {
            "observation": torch.randn(n, OBS),
            "stage": torch.randint(2, 4, (n,)),
            "action": torch.rand(n, 4) * 2 - 1,
            "next": {
                "observation": torch.randn(n, OBS),
                "stage": torch.randint(2, 4, (n,)),
                "reward": marker + torch.arange(n, dtype=torch.float32).unsqueeze(-1),
                "done": torch.zeros(n, 1, dtype=torch.bool),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        [n],
    )


def start(module: SACFineTuning, states: TensorDict) -> None:
    """What ``on_fit_start`` does, with ``states`` as π*'s replay data."""
    generator = torch.Generator().manual_seed(0)
    module._state_source = lambda n: states[torch.randperm(len(states), generator=generator)[:n]]
    module.on_fit_start()


def test_ewc_fisher_is_gaussian_and_clipped(tmp_path):
    """EWC's weights are π*'s Gaussian Fisher on its buffer states, floored at 1e-5: the heads of
    stages the states never visit get no gradient, so exactly the floor."""
    ewc = GaussianEWC(coef=100.0, fisher_states=32, fisher_min=1e-5)
    module = tiny_module(tmp_path, [ewc])
    states = pi_star_transitions(32)
    states["stage"] = torch.full((32,), 3)
    start(module, states)
    head = "module.0.module.heads.linear.weight"
    weight = ewc.weight(head).reshape(4, 8, -1)  # [stages, 2·action_dim, hidden]
    assert torch.all(weight[:3] == 1e-5)
    expected = gaussian_fisher(module.teacher.module[0].module, states, 128)["heads.linear.weight"]
    torch.testing.assert_close(ewc.weight(head), expected.clamp(min=1e-5))
    assert (weight[3] > 1e-5).any()


def test_critic_gets_no_retention_gradient(tmp_path):
    """BC's and EWC's terms move only the actor: every critic parameter of the SAC loss (twin Q
    networks and their targets) has no gradient from them, the actor has one."""
    bc, ewc = GaussianBC(coef=1.0, memory_states=64, batch_size=16), GaussianEWC(coef=100.0, fisher_states=16)
    module = tiny_module(tmp_path, [bc, ewc])
    start(module, pi_star_transitions(64))
    with torch.no_grad():  # move the student away from θ* so both terms have a gradient
        for p in module.policy.behaviour_parameters().values():
            p.add_(0.1 * torch.randn_like(p))
    module.sac_loss.zero_grad(set_to_none=True)
    total = bc.loss(module._context, None) + ewc.loss(module._context, None)
    total.backward()
    critic = list(module.sac_loss.qvalue_network_params.values(True, True))
    assert critic and all(p.grad is None or not p.grad.any() for p in critic)
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in module.policy.behaviour_parameters().values()
    )
    actor_ids = {id(p) for p in module.policy["actor"].parameters()}
    assert {id(p) for p in module.policy.behaviour_parameters().values()} <= actor_ids
    assert not actor_ids & {id(p) for p in critic}


def test_episodic_memory_survives_writes_and_a_checkpoint_round_trip(tmp_path):
    """EM puts π*'s transitions first in the buffer and no later write overwrites them, before or
    after a checkpoint round trip; the restored buffer equals the saved one slot for slot and
    keeps writing where the saved one stopped."""
    memory = pi_star_transitions(30)
    module = tiny_module(tmp_path, [EpisodicMemory(memory_size=30)], buffer_size=100)
    start(module, memory)
    assert len(module.buffer) == 30 and module.buffer.writer.kept == 30
    kept_rewards = module.buffer.storage[:30]["next", "reward"].clone()
    assert torch.all(kept_rewards >= 1000)
    module.buffer.extend(pi_star_transitions(250, marker=0.0))  # 250 online writes into 70 free slots
    assert len(module.buffer) == 100
    torch.testing.assert_close(module.buffer.storage[:30]["next", "reward"], kept_rewards)

    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    checkpoint = _through_disk(checkpoint, tmp_path / "ckpt.pt")
    restored = tiny_module(tmp_path, [EpisodicMemory(memory_size=30)], buffer_size=100)
    restored.on_load_checkpoint(checkpoint)
    assert len(restored.buffer) == 100 and restored.buffer.writer.kept == 30
    assert (restored.buffer.storage[:100] == module.buffer.storage[:100]).all()
    module.buffer.extend(pi_star_transitions(90, marker=-1.0))
    restored.buffer.extend(pi_star_transitions(90, marker=-1.0))
    torch.testing.assert_close(restored.buffer.storage[:30]["next", "reward"], kept_rewards)
    torch.testing.assert_close(
        restored.buffer.storage[:100]["next", "reward"], module.buffer.storage[:100]["next", "reward"]
    )
    # a resumed run does not add π*'s memory a second time
    start(restored, memory)
    assert len(restored.buffer) == 100 and restored.buffer.writer.kept == 30


def _through_disk(checkpoint: dict, path: Path) -> dict:
    torch.save(checkpoint, path)
    return torch.load(path, weights_only=True)


ROBOTIC = [
    "--config", str(ROOT / "configs/base.yaml"),
    "--config", str(ROOT / "configs/env/robotic.yaml"),
]  # fmt: skip
TRAINER = [
    "--config", str(ROOT / "configs/trainer/cpu.yaml"),
    "--config", str(ROOT / "configs/logger/csv.yaml"),
]  # fmt: skip


def tiny(tmp_path: Path) -> list[str]:
    """Small networks, short stages, few frames and updates: the real pipeline in seconds."""
    return [
        "--model.scenario.init_args.hidden", "16",
        "--model.scenario.init_args.depth", "2",
        "--model.scenario.init_args.steps_per_stage", "20",
        "--model.scenario.init_args.pretraining_buffer", str(tmp_path / "pi.buffer.pt"),
        "--model.collection.num_envs", "2",
        "--model.collection.rollout_length", "50",
        "--model.sac.updates_per_frame", "0.1",
        "--model.sac.batch_size", "32",
        "--model.evaluation.episodes", "2",
        "--model.evaluation.every_frames", "100",
        "--model.loglik.every_frames", "100",
    ]  # fmt: skip


def test_sac_fit_end_to_end_pretrain_finetune_resume(tmp_path):
    """``lit-rl fit`` pre-trains π* (policy and replay file written), fine-tunes it with BC + EM
    (summary.json with per-stage success, π*'s push-wall log-likelihood files), and a run resumed
    from its mid-run checkpoint continues from that checkpoint's replay buffer (π*'s memory and
    the first batch in place, the next batch added) to the end of the budget."""
    torch.set_num_threads(1)
    policy = tmp_path / "pi.pt"
    main(["fit", *ROBOTIC, "--config", str(ROOT / "configs/pretrain/robotic.yaml"), *TRAINER, *tiny(tmp_path),
          "--model.budget.frames", "200", "--model.replay.start_steps", "100",
          "--model.budget.learning_starts", "50",
          "--model.export.policy", str(policy), "--run_dir", str(tmp_path / "pre")])  # fmt: skip
    assert policy.is_file() and (tmp_path / "pi.buffer.pt").is_file()
    methods = ["--config", str(ROOT / "configs/method/robotic/bc.yaml"),
               "--config", str(ROOT / "configs/method/robotic/em.yaml"),
               "--model.retention.init_args.memory_size", "60"]  # fmt: skip
    args = ["fit", *ROBOTIC, *methods, *TRAINER, *tiny(tmp_path), "--model.pretrained", str(policy),
            "--model.budget.frames", "200", "--model.sac.updates_per_frame", "0.2"]  # fmt: skip
    run = tmp_path / "ft"
    main([*args, "--run_dir", str(run)])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "bc+em" and summary["env_steps"] == 200
    close = summary["eval"]["close"]
    for key in (
        "success_rate",
        "hammer_success",
        "push_success",
        "peg_unplug_side_success",
        "push_wall_success",
    ):
        assert 0.0 <= close[key] <= 1.0
    assert {"peg_unplug_side_success", "push_wall_success"} <= set(summary["eval"]["far"])
    assert "success_rate" in summary["eval"]["push_wall"]
    assert sorted(p.name for p in (run / "loglik").iterdir()) == [
        "000000000.pt",
        "000000100.pt",
        "000000200.pt",
    ]

    # 20 updates per batch: the step-20 checkpoint is written at the second batch's start (100
    # frames) and kept as last.prev.ckpt when the final one replaces it
    mid = torch.load(run / "checkpoints" / "last.prev.ckpt", weights_only=True)
    assert int(mid["state_dict"]["env_frames"]) == 100
    buffer = mid["replay_buffer"]
    assert buffer["size"] == 160 and buffer["writer"]["kept"] == 60
    resumed, copy = tmp_path / "resumed", tmp_path / "mid.ckpt"
    copy.write_bytes((run / "checkpoints" / "last.prev.ckpt").read_bytes())
    main([*args, "--run_dir", str(resumed), "--ckpt_path", str(copy)])
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["replay_buffer"]
    assert final["size"] == 260 and final["writer"]["kept"] == 60
    for key in ("observation", "action"):
        torch.testing.assert_close(final["transitions"][key][:160], buffer["transitions"][key])
    assert json.loads((resumed / "summary.json").read_text())["env_steps"] == 200


@pytest.mark.xdist_group("ddp")  # binds a gloo rendezvous port (tests/conftest.py)
def test_two_process_ddp_sac_run_ends_with_identical_weights(tmp_path):
    """DDP over gloo, two ranks, each with its own collector and replay buffer (π*'s memory in
    both): the gradients of every update are averaged, so the actor, the twin critics, their
    targets and log α end equal on both ranks and differ from π*'s."""
    torch.set_num_threads(1)
    policy = tmp_path / "pi.pt"
    main(["fit", *ROBOTIC, "--config", str(ROOT / "configs/pretrain/robotic.yaml"), *TRAINER, *tiny(tmp_path),
          "--model.budget.frames", "200", "--model.replay.start_steps", "200",
          "--model.budget.learning_starts", "200",
          "--model.export.policy", str(policy), "--run_dir", str(tmp_path / "pre")])  # fmt: skip
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks+:\n    - class_path: tests.ddp_probe.SaveRankWeights\n")
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "lit_rl.cli", "fit", *ROBOTIC,
           "--config", str(ROOT / "configs/method/robotic/bc.yaml"),
           "--config", str(ROOT / "configs/method/robotic/em.yaml"),
           "--model.retention.init_args.memory_size", "60", *TRAINER,
           "--config", str(ROOT / "configs/trainer/ddp.yaml"), "--config", str(probe), *tiny(tmp_path),
           "--model.pretrained", str(policy), "--model.budget.frames", "200",
           "--model.sac.updates_per_frame", "0.2", "--run_dir", str(run)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(run / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["frames"] == ranks[1]["frames"] == 200
    trained = [n for n in ranks[0]["module"] if n.startswith(("policy.actor.", "sac_loss."))]
    assert any(n.startswith("sac_loss.qvalue_network_params") for n in trained)
    for name in trained:
        assert torch.equal(ranks[0]["module"][name], ranks[1]["module"][name]), name
    start = torch.load(policy, weights_only=True)["state_dict"]
    actor = {
        n.removeprefix("policy."): v for n, v in ranks[0]["module"].items() if n.startswith("policy.actor.")
    }
    assert any(not torch.equal(v, start[n]) for n, v in actor.items() if n in start), "the actor did not move"
    assert json.loads((run / "summary.json").read_text())["env_steps"] == 200
