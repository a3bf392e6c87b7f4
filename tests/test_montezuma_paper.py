"""The `montezuma_paper` preset and network against the paper's reference implementation, and the
two-stream advantage from the values stored during collection (issue 14 point 1).

Reference: jcwleo/random-network-distillation-pytorch at commit e383fb9 (the paper's RND agent,
paper.md §4); file and line of each value are cited where it is checked.
"""

import copy

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from lit_rl.envs.montezuma import MontezumaEnv
from lit_rl.models.atari_cnn import PixelTrunk, TwoValueHeads, make_atari_actor_critic
from lit_rl.models.rnd import RND, combined_advantage, warm_up_observation_stats
from lit_rl.scenarios import Montezuma
from lit_rl.training.ppo import Advantage, Optimisation
from lit_rl.training.rnd import RNDFineTuning, RNDSettings
from lit_rl.training.settings import Budget, Collection
from tests.test_montezuma_scenario import pool_file  # noqa: F401 (a fixture)
from tests.test_presets import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gain(linear: nn.Module) -> float:
    """The gain of an orthogonal init: the singular values of an orthogonal matrix times g are g."""
    return torch.linalg.svdvals(linear.weight.detach().flatten(1)).mean().item()


def test_network_is_jcwleos_cnn_actor_critic():
    torch.manual_seed(0)
    model = make_atari_actor_critic(18)
    trunk = next(m for m in model.modules() if isinstance(m, PixelTrunk))
    layers = [m for m in trunk.net if isinstance(m, nn.Conv2d | nn.Linear)]
    # model.py lines 84-112: three Nature convs, then 7·7·64 → 256 → 448, ReLU after each
    shapes = [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in layers[:3]]
    assert shapes == [(4, 32, (8, 8), (4, 4)), (32, 64, (4, 4), (2, 2)), (64, 64, (3, 3), (1, 1))]
    assert [(m.in_features, m.out_features) for m in layers[3:]] == [(3136, 256), (256, 448)]
    assert isinstance(trunk.net[-1], nn.ReLU)
    # lines 128-135: orthogonal √2 everywhere first
    assert all(_gain(m) == pytest.approx(2**0.5, rel=1e-4) for m in layers)
    policy = [m for m in model.get_policy_operator().modules() if isinstance(m, nn.Linear)]
    policy = [m for m in policy if all(m is not layer for layer in layers)]
    # lines 114-118 and 143-146: 448 → 448 → actions, both with gain 0.01
    assert [(m.in_features, m.out_features) for m in policy] == [(448, 448), (448, 18)]
    assert all(_gain(m) == pytest.approx(0.01, rel=1e-4) for m in policy)
    heads = next(m for m in model.modules() if isinstance(m, TwoValueHeads))
    # lines 120-125, 137-141, 148-151: shared 448 value layer (gain 0.1), two heads (gain 0.01)
    assert (heads.layer[0].in_features, heads.layer[0].out_features) == (448, 448)
    assert _gain(heads.layer[0]) == pytest.approx(0.1, rel=1e-4)
    assert _gain(heads.extrinsic) == pytest.approx(0.01, rel=1e-4)
    assert _gain(heads.intrinsic) == pytest.approx(0.01, rel=1e-4)
    # line 156: the heads read extra_layer(x) + x
    x = torch.randn(3, 448)
    ext, intr = heads(x)
    h = torch.relu(heads.layer[0](x)) + x
    assert torch.allclose(ext, heads.extrinsic(h)) and torch.allclose(intr, heads.intrinsic(h))


def test_paper_preset_has_the_reference_settings(capsys):
    config = resolve(capsys, "env/montezuma.yaml", "env/montezuma_paper.yaml")
    model = config["model"]["init_args"]
    scenario = model["scenario"]["init_args"]
    expected = {
        "collection.num_envs": 128,  # config.conf NumEnv
        "collection.rollout_length": 128,  # NumStep
        "optimisation.minibatch_size": 128 * 128 // 4,  # MiniBatch = 4 (train.py line 52)
        "optimisation.epochs": 4,  # Epoch
        "optimisation.lr": 1e-4,  # LearningRate
        "loss.clip_epsilon": 0.1,  # PPOEps
        "loss.entropy_coef": 0.001,  # Entropy
        "advantage.gamma": 0.999,  # Gamma
        "rnd.gamma_int": 0.99,  # IntGamma
        "advantage.gae_lambda": 0.95,  # Lambda
        "rnd.ext_coef": 2.0,  # ExtCoef
        "rnd.int_coef": 1.0,  # IntCoef
        "rnd.update_proportion": 0.25,  # UpdateProportion
        "optimisation.max_grad_norm": 0.5,  # ClipGradNorm (and the paper's table)
        "rnd.normalize_advantage": False,  # UseNorm = False; agents.py 119-127 use raw advantages
        "rnd.adam_eps": 1e-8,  # agents.py line 50: torch's default ε
        "rnd.obs_warmup_steps": 128 * 50,  # train.py line 134: range(num_step * pre_obs_norm_step)
        "evaluation.every_frames": 5_000_000,  # paper §4: Room-7 success every 5M steps
        "loss.critic_coef": 1.0,  # mean of 2 heads' errors = agents.py line 136's 0.5 · (ext + int)
    }
    resolved = {k: model[k.split(".")[0]][k.split(".")[1]] for k in expected}
    assert resolved == expected
    assert scenario["max_episode_steps"] == 4500  # MaxStepPerEpisode
    assert scenario["sticky_prob"] == 0.25  # ActionProb
    assert scenario["min_demonstrations"] >= 500  # paper §4: > 500 BC trajectories


def _module(pool, max_episode_steps: int = 50, advantage: Advantage = Advantage()) -> RNDFineTuning:
    scenario = Montezuma(pool=str(pool), max_episode_steps=max_episode_steps)
    return RNDFineTuning(
        scenario,
        collection=Collection(start="far", num_envs=2, rollout_length=16),
        optimisation=Optimisation(minibatch_size=32),
        rnd=RNDSettings(obs_warmup_steps=2),
        advantage=advantage,
        budget=Budget(frames=32),
    )


def test_advantages_are_raw_and_adam_uses_the_reference_eps(pool_file):  # noqa: F811
    module = _module(pool_file)
    optimizer = module.configure_optimizers()
    assert {g["eps"] for g in optimizer.param_groups} == {1e-8}
    td = TensorDict(
        pixels=torch.randint(0, 255, (8, 4, 84, 84), dtype=torch.uint8),
        value_target=torch.zeros(8, 2),
        batch_size=[8],
    )
    with torch.no_grad():
        module.policy["actor"](td)
    td["sample_log_prob"] = td["action_log_prob"]
    td["advantage"] = torch.linspace(-1.0, 2.0, 8).unsqueeze(-1)
    small = module.ppo_loss(td.clone())["loss_objective"]
    td["advantage"] = td["advantage"] * 10
    large = module.ppo_loss(td.clone())["loss_objective"]
    # unnormalised: the objective scales with the advantages (normalised, both would be equal)
    assert torch.allclose(large, 10 * small, rtol=1e-4) and small.abs() > 1e-3


def test_observation_warm_up_in_chunks_equals_one_pass():
    env = MontezumaEnv(2, seed=0)
    whole, chunked = RND(), RND()
    torch.manual_seed(0)  # the random actions
    warm_up_observation_stats(whole, env, 6, chunk=6)
    env.set_seed(0)
    torch.manual_seed(0)
    warm_up_observation_stats(chunked, env, 6, chunk=4)
    env.close()
    assert chunked.obs_rms.count.item() == pytest.approx(12, abs=1e-3)
    assert torch.allclose(whole.obs_rms.mean, chunked.obs_rms.mean)
    assert torch.allclose(whole.obs_rms.var, chunked.obs_rms.var)


def test_too_few_demonstrations_is_a_one_line_error(pool_file, tmp_path):  # noqa: F811
    from lit_rl.recording.montezuma_bc import record

    record(Montezuma(pool=str(pool_file), max_episode_steps=3), None, 2, tmp_path / "bc", num_envs=2)
    scenario = Montezuma(pool=str(pool_file), pretraining_data=str(tmp_path / "bc"), min_demonstrations=3)
    with pytest.raises(ValueError, match="holds 2 trajectories but .*min_demonstrations is 3"):
        scenario.pretraining_states(0)


def test_advantage_from_stored_values_equals_the_full_critic_pass(pool_file):  # noqa: F811
    """GAE from the collection pass's values (plus the critic on each row's last next-state and on
    every episode's final state) equals re-running the critic on every frame and next frame."""
    torch.manual_seed(0)
    # truncations inside the 16-step rows; the paper's discounts
    module = _module(pool_file, max_episode_steps=5, advantage=Advantage(gamma=0.999, gae_lambda=0.95))
    env = module.scenario.make_env(2, "far", 3)
    with torch.no_grad():
        batch = env.rollout(16, module._collection_policy(), break_when_any_done=False)
    env.close()
    assert {"state_value", "state_value_int"} <= set(batch.keys())
    assert batch["next", "done"][:, :-1].any()
    reference = copy.deepcopy(module)
    module.compute_advantage(batch)

    critic = reference.policy["critic"]
    with torch.no_grad():
        values = critic(batch.select("pixels").clone(False))
        next_values = critic(batch["next"].select("pixels").clone(False))
        raw = reference.rnd.intrinsic_reward(batch["next", "pixels"])
        reward_int = reference.rnd.normalise_intrinsic(raw, time_dim=1).unsqueeze(-1)
    advantage, target_ext, target_int = combined_advantage(
        batch["next", "reward"].clamp(-1, 1),
        reward_int,
        values["state_value"],
        next_values["state_value"],
        values["state_value_int"],
        next_values["state_value_int"],
        batch["next", "done"],
        batch["next", "terminated"],
        gamma_ext=module.advantage.gamma,
        lmbda=module.advantage.gae_lambda,
    )
    assert torch.allclose(batch["advantage"], advantage, atol=1e-5)
    assert torch.allclose(batch["value_target"], torch.cat([target_ext, target_int], -1), atol=1e-5)
