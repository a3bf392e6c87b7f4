"""Room-7 demonstrations (issue 16.1): the explorer's successful trajectories replay, from their
saved start state, to the same room and success, and become BC data."""

import ale_py
import pytest
import torch
from tensordict import TensorDict

from lit_rl.datasets.montezuma_trajectories import FRAMES, load_trajectory_buffer
from lit_rl.envs.montezuma_states import RAM_ROOM, StartStatePool, make_ale
from lit_rl.experts.montezuma_demos import (
    build_demonstrations,
    load_demonstrations,
    replay_demonstration,
    save_demonstrations,
)
from tests.test_montezuma_scenario import pool_file  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _room_after(demo) -> int:
    """The room after playing the demonstration in a bare ALE (own seed, no sticky actions),
    restored as MontezumaEnv restores: one NOOP frame after the saved state."""
    ale = make_ale(123, sticky_prob=0.0)
    actions = ale.getMinimalActionSet()
    ale.restoreState(ale_py.ALEState(demo.start))
    ale.act(actions[0])
    for action in demo.actions:
        for _ in range(4):
            ale.act(actions[action])
    return int(ale.getRAM()[RAM_ROOM])


def test_saved_demonstrations_replay_to_the_same_room_and_success(pool_file, tmp_path):  # noqa: F811
    pool = StartStatePool.load(pool_file)
    demos = build_demonstrations(pool, per_state=2, seed=0, budget_frames=200_000)
    assert demos, "the explorer found no Room-7 success from the test state"
    built = [replay_demonstration(d) for d in demos]
    assert all(success for _, success, _ in built)
    out = save_demonstrations(demos, tmp_path / "demos", {"pool": str(pool_file)})
    loaded = load_demonstrations(out)
    assert [d.actions for d in loaded] == [d.actions for d in demos]
    stored = TensorDict.load_memmap(out / FRAMES)
    for episode, (demo, (frames, _, room)) in enumerate(zip(loaded, built, strict=True)):
        again, success, room_again = replay_demonstration(demo)
        assert success and room_again == room
        assert frames["room"][0] == 7 and torch.equal(again["pixels"], frames["pixels"])
        assert _room_after(demo) == room  # an emulator of its own, another seed: no luck involved
        mine = stored[stored["episode"] == episode]
        assert torch.equal(mine["pixels"], frames["pixels"]) and torch.equal(mine["action"], frames["action"])
    buffer = load_trajectory_buffer(out, min_episodes=len(demos))
    assert buffer.sample(4)["pixels"].shape == (4, 4, 84, 84)
