"""RoboticSequence on real Meta-World/MuJoCo: stage switching, the success reward, terminal flags,
observation layout, seeding and TorchRL's spec check.

The scripted episodes use Meta-World's own expert policies (``metaworld.policies``), which solve
each stage in 50–170 steps; with the fixed seed the whole run is deterministic.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from metaworld import policies
from tensordict import TensorDict
from torchrl.envs import ParallelEnv
from torchrl.envs.utils import check_env_specs

from lit_rl.envs.robotic_sequence import (
    ROBOTIC_SEQUENCE,
    TASK_OBS_DIM,
    RoboticSequenceEnv,
)

EXPERTS = {
    "hammer-v3": policies.SawyerHammerV3Policy(),
    "push-v3": policies.SawyerPushV3Policy(),
    "peg-unplug-side-v3": policies.SawyerPegUnplugSideV3Policy(),
    "push-wall-v3": policies.SawyerPushWallV3Policy(),
}
T = 200
BETA = 1.5
SEED = 3  # Meta-World's experts solve all four stages within T with this seed (checked below)

pytestmark = pytest.mark.filterwarnings("ignore:Constant\\(s\\) may be too high")


def expert_actions(env: RoboticSequenceEnv, td: TensorDict) -> torch.Tensor:
    """Each sequence's current-stage expert acting on the 39-d Meta-World part of its observation."""
    obs = td["observation"].double().numpy()
    actions = [
        EXPERTS[env.stages[stage]].get_action(obs[i, :TASK_OBS_DIM])
        for i, stage in enumerate(td["stage"].tolist())
    ]
    return torch.as_tensor(np.stack(actions), dtype=torch.float32).clamp(-1, 1)


def run_episode(env: RoboticSequenceEnv, policy) -> list[TensorDict]:
    """Step sequence 0 of ``env`` from a reset until its episode ends; returns the step outputs."""
    td = env.reset()
    steps = []
    for _ in range(T * len(env.stages) + 1):
        td["action"] = policy(env, td)
        td = env.step(td)
        steps.append(td.clone())
        if td["next", "done"][0].item():
            return steps
        td = td["next"].clone()
    raise AssertionError("the episode never ended")


def test_scripted_sequence_switches_stages_and_augments_the_final_reward():
    env = RoboticSequenceEnv(1, seed=SEED)
    steps = run_episode(env, expert_actions)
    stage = [s["stage"].item() for s in steps]  # the stage each action was taken in
    next_stage = [s["next", "stage"].item() for s in steps]
    solved = [s["next", "stage_success"].item() for s in steps]
    assert sorted(set(stage)) == [0, 1, 2, 3] and stage == sorted(stage)
    for k, s in enumerate(steps):
        t_obs = s["observation"][0, -1].item()
        if next_stage[k] != stage[k]:
            # a switch happens exactly on a stage's success, to the next stage, with a new clock
            assert solved[k] and next_stage[k] == stage[k] + 1
            obs = s["next", "observation"][0]
            assert obs[-1].item() == 0.0
            assert obs[TASK_OBS_DIM:-1].tolist() == torch.eye(4)[next_stage[k]].tolist()
        else:
            assert s["next", "observation"][0, -1].item() == pytest.approx(t_obs + 1 / T)
        if k < len(steps) - 1:  # every step but the last: plain Meta-World reward, not done
            assert not s["next", "done"].item() and not s["next", "success"].item()
            assert s["next", "reward"].item() == s["next", "task_reward"].item()
    assert sum(solved) == 4

    last = steps[-1]
    assert last["next", "done"].item() and last["next", "terminated"].item()
    assert not last["next", "truncated"].item() and not last["next", "time_limit"].item()
    assert last["next", "success"].item() and last["next", "stages_solved"].item() == 4
    # Recompute r_t with Meta-World's own reward function on the final state of push-wall.
    push_wall = env.task_envs[0][3]
    action = last["action"][0].double().numpy()
    r, info = push_wall.evaluate_state(push_wall._last_stable_obs, action)
    assert info["success"] and r > 0
    t = round(last["observation"][0, -1].item() * T)  # time of the final action in its stage
    assert 0 < t < T
    assert last["next", "reward"].item() == pytest.approx(BETA * r * (T - t), rel=1e-5)
    assert last["next", "task_reward"].item() == pytest.approx(r, rel=1e-5)


def test_time_limit_is_terminal_and_not_bootstrapped():
    env = RoboticSequenceEnv(2, stages_per_episode=1, seed=0)  # hammer only: 2 scenes to build
    td = env.reset()
    for k in range(T):
        assert td["observation"][:, -1].tolist() == pytest.approx([k / T] * 2)
        td["action"] = torch.zeros(2, 4)
        td = env.step(td)
        nxt = td["next"]
        ended = k == T - 1
        assert nxt["done"].all().item() == ended and nxt["time_limit"].all().item() == ended
        assert torch.equal(nxt["reward"], nxt["task_reward"])  # no success, no augmentation
        td = nxt.clone()
    assert nxt["terminated"].all() and not nxt["truncated"].any() and not nxt["success"].any()
    assert nxt["observation"][:, -1].tolist() == [1.0, 1.0]
    assert nxt["stage"].tolist() == [0, 0]

    # The opt-out reports the time limit as a truncation (bootstrapped) instead.
    short = RoboticSequenceEnv(1, steps_per_stage=5, time_limit_terminal=False, seed=0)
    rollout = short.rollout(10, break_when_any_done=True)
    assert rollout.shape[-1] == 5
    final = rollout[..., -1]["next"]
    assert final["done"].item() and final["truncated"].item() and not final["terminated"].item()


def test_start_stage_and_single_stage_episodes():
    # pi*'s setting: peg-unplug-side and push-wall, each in its own episodes.
    env = RoboticSequenceEnv(
        1, start_stages=("peg-unplug-side-v3", "push-wall-v3"), stages_per_episode=1, seed=SEED
    )
    # only the reachable stages are built
    assert [e is None for e in env.task_envs[0]] == [True, True, False, False]
    starts = {env.reset()["stage"].item() for _ in range(12)}
    assert starts == {2, 3}
    env.set_seed(SEED)
    steps = run_episode(env, expert_actions)
    last = steps[-1]
    stage = last["stage"].item()
    assert {s["stage"].item() for s in steps} == {stage}
    assert last["next", "success"].item() and last["next", "terminated"].item()
    assert last["next", "stage"].item() == stage and last["next", "stages_solved"].item() == 1
    t = round(last["observation"][0, -1].item() * T)
    assert last["next", "reward"].item() == pytest.approx(
        BETA * last["next", "task_reward"].item() * (T - t), rel=1e-5
    )

    # FAR evaluation enters push-wall directly; its one-hot keeps the index of the whole sequence.
    direct = RoboticSequenceEnv(1, start_stages="push-wall-v3", seed=0)
    obs = direct.reset()["observation"][0]
    assert obs[TASK_OBS_DIM:-1].tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="not in the sequence"):
        RoboticSequenceEnv(1, start_stages="reach-v3")


def test_observation_layout():
    env = RoboticSequenceEnv(4, start_stages=(0, 3), stages_per_episode=1, seed=1)
    td = env.reset()
    obs = td["observation"]
    assert obs.shape == (4, TASK_OBS_DIM + 4 + 1) and obs.dtype == torch.float32
    assert set(td["stage"].tolist()) == {0, 3}  # this seed draws both start stages
    one_hot = obs[:, TASK_OBS_DIM:-1]
    assert torch.equal(one_hot, torch.eye(4)[td["stage"]])
    assert obs[:, -1].tolist() == [0.0] * 4
    for i, stage in enumerate(td["stage"].tolist()):
        scene = env.task_envs[i][stage]
        # hand position first, the (re-sampled) goal last: goal-observable Meta-World state
        assert obs[i, :3].tolist() == pytest.approx(scene.data.body("hand").xpos.tolist(), abs=1e-6)
        assert obs[i, 36:39].tolist() == pytest.approx(scene._target_pos.tolist(), abs=1e-6)
    assert env.stages == ROBOTIC_SEQUENCE


def test_seeding_reproduces_and_varies_the_random_starts():
    first = RoboticSequenceEnv(2, start_stages="push-wall-v3", seed=7).reset()["observation"]
    again = RoboticSequenceEnv(2, start_stages="push-wall-v3", seed=7)
    assert torch.equal(first, again.reset()["observation"])
    # the two sequences of one env draw different object/goal positions
    assert not torch.equal(first[0], first[1])
    other = RoboticSequenceEnv(2, start_stages="push-wall-v3", seed=8).reset()["observation"]
    assert not torch.equal(first, other)
    # set_seed after some play restores the fresh env's first observation; later resets differ
    again.rollout(30)
    again.set_seed(7)
    assert torch.equal(first, again.reset()["observation"])
    assert not torch.equal(first, again.reset()["observation"])


def test_torchrl_spec_check_in_process_and_in_workers():
    check_env_specs(RoboticSequenceEnv(1, seed=0), seed=0)  # the full sequence: 4 scenes
    make = functools.partial(RoboticSequenceEnv, 1, start_stages="push-wall-v3", seed=0)
    # fork: spawned workers re-import torch, TorchRL and Meta-World (≈ 25 s on a loaded machine)
    parallel = ParallelEnv(2, make, mp_start_method="fork")
    try:
        check_env_specs(parallel, seed=0)
        td = parallel.rollout(3)
        assert td.shape == (2, 1, 3)  # workers × sequences per worker × time
        # ParallelEnv.set_seed gives each worker its own seed, so their random starts differ
        assert not torch.equal(td["observation"][0, 0, 0], td["observation"][1, 0, 0])
    finally:
        parallel.close()
