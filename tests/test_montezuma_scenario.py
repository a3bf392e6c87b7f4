"""The Montezuma scenario, PPO + RND fine-tuning and π* trajectory recording (paper section 4).

Pool restore and the RAM layout are covered by tests/test_montezuma.py; here a one-state Room-7
pool is rebuilt from its recorded walk and drives the scenario, the RND hooks and the real CLI.
"""

import json
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.objectives import ClipPPOLoss

from lit_rl.cli import main
from lit_rl.datasets.montezuma_trajectories import load_trajectory_buffer
from lit_rl.envs.montezuma_states import RAM_LEVEL, RAM_ROOM, StartStatePool, replay
from lit_rl.models.atari_cnn import TwoValueHeads
from lit_rl.models.policy_io import save_policy
from lit_rl.recording.montezuma_bc import record
from lit_rl.scenarios import Montezuma
from lit_rl.training.ppo import Optimisation
from lit_rl.training.rnd import RNDFineTuning, RNDSettings, _Concat, rnd_path
from lit_rl.training.settings import Budget, Collection
from tests.test_montezuma import ROOM7_WALK, _decode

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory) -> Path:
    actions = _decode(ROOM7_WALK)
    ale = replay(actions)
    ram = ale.getRAM()
    pool = StartStatePool(
        states=[ale.cloneState().serialize()],
        rooms=[int(ram[RAM_ROOM])],
        entrance_rooms=[6],
        levels=[int(ram[RAM_LEVEL])],
        actions=[actions],
    )
    return pool.save(tmp_path_factory.mktemp("pool") / "room7.pt")


def test_subspaces_start_in_room_1_and_room_7_with_a_success_done_key(pool_file):
    scenario = Montezuma(pool=str(pool_file), max_episode_steps=3)
    close, far = scenario.make_env(2, "close", 0), scenario.make_env(2, "far", 0)
    assert close.reset()["room"].tolist() == [1, 1]
    td = far.reset()
    assert td["room"].tolist() == [7, 7]
    assert "success" in far.full_done_spec.keys()
    far._ales[0].setRAM(65, 0x02)  # env 0 picks up a key: a FAR success
    for _ in range(3):
        td["action"] = torch.zeros(2, dtype=torch.int64)
        out = far.step(td)["next"]
        # success is reported with the episode's end only, so it never causes an extra reset
        assert out["success"].view(-1).tolist() == [bool(out["done"][0]), False]
        td = out.clone()
    assert out["done"].all() and out["success"].view(-1).tolist() == [True, False]
    close.close()
    far.close()


def test_missing_pool_names_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make montezuma-pool"):
        Montezuma(pool=str(tmp_path / "none.pt")).make_env(1, "far", 0)


def test_visitation_is_a_histogram_over_close_and_far_rooms():
    scenario = Montezuma()
    batch = TensorDict({"room": torch.tensor([[1, 6, 7, 12]]), "level": torch.tensor([[0, 0, 0, 0]])}, [1, 4])
    shares = scenario.visitation(batch)
    assert shares == pytest.approx({"close": 0.5, "far": 0.5})
    assert sum(shares.values()) == pytest.approx(1.0)


def _module(pool_file, rnd: RNDSettings = RNDSettings(obs_warmup_steps=4)) -> RNDFineTuning:
    scenario = Montezuma(pool=str(pool_file), max_episode_steps=50)
    return RNDFineTuning(
        scenario,
        collection=Collection(start="far", num_envs=2, rollout_length=16),
        optimisation=Optimisation(minibatch_size=16),
        rnd=rnd,
        budget=Budget(frames=32),
    )


def test_rnd_intrinsic_advantage_and_both_value_heads_are_wired(pool_file):
    torch.manual_seed(0)
    module = _module(pool_file)
    env = module.scenario.make_env(2, "far", 1)
    with torch.no_grad():
        batch = env.rollout(16, module.policy["actor"], break_when_any_done=False)
    env.close()
    extrinsic_only = _module(pool_file, RNDSettings(obs_warmup_steps=4, int_coef=0.0))
    extrinsic_only.load_state_dict(module.state_dict())
    ext_batch = batch.clone()
    module.compute_advantage(batch)
    extrinsic_only.compute_advantage(ext_batch)
    assert (batch["reward_int"] > 0).all()
    assert not torch.allclose(batch["advantage"], ext_batch["advantage"])
    assert batch["value_target"].shape == (2, 16, 2)

    minibatch = batch.reshape(-1)
    losses = module.ppo_loss(minibatch)
    losses = {k: v for k, v in losses.items() if k.startswith("loss_")}
    losses.update(module.extra_losses(minibatch))
    assert set(losses) >= {"loss_objective", "loss_critic", "loss_rnd"}
    torch.stack(list(losses.values())).sum().backward()
    heads = next(m for m in module.policy["critic"].modules() if isinstance(m, TwoValueHeads))
    assert heads.extrinsic.weight.grad.abs().sum() > 0
    assert heads.intrinsic.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.rnd.target.parameters())
    assert module.rnd.predictor[0].weight.grad.abs().sum() > 0
    optimizer = module.configure_optimizers()
    rnd_params = {id(p) for p in module.rnd.predictor.parameters()}
    assert rnd_params <= {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_recorded_trajectories_replay_as_a_buffer(pool_file, tmp_path):
    scenario = Montezuma(pool=str(pool_file), max_episode_steps=6)
    data = record(scenario, None, 3, tmp_path / "bc", num_envs=2)
    assert data.numel() == 18 and data["episode"].unique().tolist() == [0, 1, 2]
    meta = json.loads((tmp_path / "bc" / "meta.json").read_text())
    assert meta["frames"] == 18
    sample = load_trajectory_buffer(tmp_path / "bc").sample(4)
    assert sample["pixels"].shape == (4, 4, 84, 84) and (sample["room"] >= 6).all()


def _fit(run_dir: Path, *args: str) -> dict:
    main(
        [
            "fit",
            "--config", str(ROOT / "configs/base.yaml"),
            "--config", str(ROOT / "configs/env/montezuma.yaml"),
            *args,
            "--config", str(ROOT / "configs/trainer/cpu.yaml"),
            "--config", str(ROOT / "configs/logger/csv.yaml"),
            "--model.collection.num_envs", "2",
            "--model.collection.rollout_length", "16",
            "--model.optimisation.minibatch_size", "16",
            "--model.optimisation.epochs", "1",
            "--model.budget.frames", "32",
            "--model.rnd.obs_warmup_steps", "2",
            "--model.evaluation.episodes", "2",
            "--model.evaluation.every_frames", "1000",
            "--model.scenario.init_args.max_episode_steps", "20",
            "--run_dir", str(run_dir),
        ]
    )  # fmt: skip
    return json.loads((run_dir / "summary.json").read_text())


def test_cli_pretrains_from_room_7_and_fine_tunes_with_bc_on_recorded_data(pool_file, tmp_path):
    pool = ["--model.scenario.init_args.pool", str(pool_file)]
    policy = tmp_path / "montezuma.pt"
    summary = _fit(
        tmp_path / "pretrain",
        "--config", str(ROOT / "configs/pretrain/montezuma.yaml"),
        *pool, "--model.export.policy", str(policy),
    )  # fmt: skip
    assert summary["env_steps"] == 32 and policy.is_file()
    assert set(summary["eval"]["far"]) >= {"success_rate", "return_mean", "episodes"}
    exported_rnd = torch.load(rnd_path(policy), weights_only=True)["state_dict"]
    finetuning = RNDFineTuning(Montezuma(pool=str(pool_file)), pretrained=str(policy))
    assert bool(finetuning.obs_warmed_up)  # π*'s RND and its statistics continue
    assert all(torch.equal(v, finetuning.rnd.state_dict()[k]) for k, v in exported_rnd.items())
    other = tmp_path / "other.pt"  # another π* with the RND file of the first beside it
    with torch.no_grad():
        next(finetuning.policy.parameters()).add_(1.0)
    save_policy(other, finetuning.policy, finetuning.scenario.describe())
    rnd_path(other).write_bytes(rnd_path(policy).read_bytes())
    with pytest.warns(UserWarning, match="does not match this π"):
        stale = RNDFineTuning(Montezuma(pool=str(pool_file)), pretrained=str(other))
    assert not bool(stale.obs_warmed_up)
    scenario = Montezuma(pool=str(pool_file), max_episode_steps=8)
    record(scenario, policy, 2, tmp_path / "bc", num_envs=2)
    summary = _fit(
        tmp_path / "bc_run",
        "--config", str(ROOT / "configs/method/bc.yaml"),
        *pool, "--model.pretrained", str(policy),
        "--model.scenario.init_args.pretraining_data", str(tmp_path / "bc"),
        "--model.retention.init_args.batch_size", "8",
    )  # fmt: skip
    assert summary["method"] == "bc" and summary["env_steps"] == 32
    assert summary["pretrained"]["far"]["episodes"] == 2
    metrics = (tmp_path / "bc_run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_bc", "train/loss_rnd", "train/visit/far", "train/reward_int"} <= set(metrics)


def test_value_heads_reuse_the_actor_trunk_with_the_same_gradients(pool_file):
    """The PPO loss's critic is the value heads alone, reading the actor's ``hidden``; that must
    give the gradients of the full critic (it relies on TorchRL running the actor first)."""
    torch.manual_seed(0)
    module = _module(pool_file)
    env = module.scenario.make_env(2, "far", 2)
    with torch.no_grad():
        batch = env.rollout(16, module.policy["actor"], break_when_any_done=False)
    env.close()
    module.compute_advantage(batch)
    minibatch = batch.reshape(-1)
    shared = module.ppo_loss
    assert not any(m is module.policy["critic"].module[0] for m in shared.critic_network.module)
    full = ClipPPOLoss(
        module.policy["actor"],
        TensorDictSequential(
            module.policy["critic"],
            TensorDictModule(
                _Concat(), in_keys=["state_value", "state_value_int"], out_keys=["state_values"]
            ),
        ),
        clip_epsilon=0.1,
        entropy_bonus=False,
        critic_coeff=module.loss.critic_coef,
        loss_critic_type="l2",
        normalize_advantage=module.ppo_loss.normalize_advantage,
    )
    full.set_keys(value="state_values")
    params = list(module.policy.parameters())

    def gradients(loss) -> list[torch.Tensor]:
        module.zero_grad()
        out = loss(minibatch.clone())
        (out["loss_objective"] + out["loss_critic"]).backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]

    for a, b in zip(gradients(shared), gradients(full), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
