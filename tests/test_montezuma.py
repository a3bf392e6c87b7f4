"""MontezumaEnv (paper section 4 settings), RAM layout, start-state pools and FAR success."""

import itertools

import numpy as np
import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs

from lit_rl.envs.montezuma import MontezumaEnv, area_resize, far_success_events
from lit_rl.envs.montezuma_states import (
    NO_ROOM,
    RAM_INVENTORY,
    RAM_LEVEL,
    RAM_LIVES,
    RAM_ROOM,
    RAM_X,
    RAM_Y,
    START_ROOM,
    StartStatePool,
    make_ale,
    replay,
)
from lit_rl.experts.montezuma_explorer import build_pool, main

# A Go-Explore walk (build_pool seed 2) from the game start into Room 7 through rooms
# 1 → 2 → 1 → 2 → 6 → 2 → 6 → 7, run-length coded: count, then action a..r = minimal set 0..17.
ROOM7_WALK = (
    "2q10f6q3n11f6j4m16c5p6h9m5f12c2b5e3o5j3f7n21j3d2l3r12f2b2m2k8d2k21c12l3b2k9b7c6r10j3g34h"
    "2f21h4p3q28k7a2g18o4g1k12m5h9o20g24n25f47n8h1l18h59a1q18o23c27m8c1q9h28f17d2g"
)


def _decode(walk: str) -> bytes:
    out = bytearray()
    for is_digit, group in itertools.groupby(walk, str.isdigit):
        if is_digit:
            count = int("".join(group))
        else:
            for letter in group:
                out.extend([ord(letter) - ord("a")] * count)
                count = 1
    return bytes(out)


@pytest.fixture(scope="module")
def room7_pool(tmp_path_factory):
    """A one-state pool in Room 7, built by replaying the recorded walk, saved and reloaded."""
    actions = _decode(ROOM7_WALK)
    ale = replay(actions)
    pool = StartStatePool(
        states=[ale.cloneState().serialize()],
        rooms=[int(ale.getRAM()[RAM_ROOM])],
        entrance_rooms=[6],
        levels=[int(ale.getRAM()[RAM_LEVEL])],
        actions=[actions],
    )
    return StartStatePool.load(pool.save(tmp_path_factory.mktemp("pool") / "room7.pt"))


def test_ram_layout_follows_the_player():
    ale = make_ale(0, sticky_prob=0.0)
    ram = ale.getRAM()
    assert (ram[RAM_ROOM], ram[RAM_LEVEL], ram[RAM_INVENTORY]) == (START_ROOM, 0, 0)
    assert ale.lives() == ram[RAM_LIVES] + 1
    x, y = int(ram[RAM_X]), int(ram[RAM_Y])
    right = ale.getMinimalActionSet()[3]
    for _ in range(8):
        ale.act(right)
    assert ale.getRAM()[RAM_X] > x and ale.getRAM()[RAM_Y] == y
    for _ in range(24):  # off the right edge of the start ledge: a fall lowers y
        ale.act(right)
    assert ale.getRAM()[RAM_Y] < y - 10


def test_replayed_walk_reaches_room_7_and_restores_there(room7_pool):
    assert room7_pool.rooms == [7] and room7_pool.levels == [0]
    env = MontezumaEnv(2, start_states=room7_pool, seed=1)
    td = env.reset()
    assert td["room"].tolist() == [7, 7] and td["start_room"].tolist() == [7, 7]
    assert td["level"].tolist() == [0, 0]
    assert not td["episode_far_success"].any()
    env.close()


def test_far_success_marks_a_new_item_in_the_start_room(room7_pool):
    env = MontezumaEnv(2, start_states=room7_pool, sticky_prob=0.0)
    td = env.reset()
    env._ales[0].setRAM(RAM_INVENTORY, 0x02)  # as if env 0 had just picked up a key
    td["action"] = torch.zeros(2, dtype=torch.int64)
    out = env.step(td)["next"]
    assert out["far_success"].tolist() == [True, False]
    assert out["episode_far_success"].tolist() == [True, False]
    assert out["keys"].tolist() == [1, 0]
    env.close()


def test_far_success_events_rules():
    one = np.ones(5, dtype=np.int64)
    events = far_success_events(
        reward=np.array([0.0, 100.0, 0.0, 0.0, 0.0]),
        room_before=7 * one,
        room=np.array([7, 7, 6, 12, 12]),
        inventory_before=np.array([0, 0, 2, 0, 0]),
        inventory=np.array([0, 0, 0, 0, 0]),
        start_room=7 * one,
        entrance_room=6 * one,
        moved_by_game=np.array([False, False, False, False, True]),
    )
    # nothing; a coin; back out by the entrance (and a key used); another passage; a death.
    assert events.tolist() == [False, True, False, True, False]
    elsewhere = far_success_events(
        np.zeros(1),
        12 * one[:1],
        13 * one[:1],
        0 * one[:1],
        0 * one[:1],
        7 * one[:1],
        6 * one[:1],
        np.zeros(1, dtype=bool),
    )
    assert not elsewhere.any()  # events count only while in the start room


def test_pool_build_round_trip_and_restore(tmp_path):
    pool = build_pool(None, 8_000, seed=0)
    assert len(pool) > 3 and set(pool.rooms) == {START_ROOM}
    assert pool.entrance_rooms == [NO_ROOM] * len(pool)
    path = tmp_path / "pool.pt"
    assert main(["build", "--frames", "8000", "--seed", "0", "--out", str(path)]) == 0
    loaded = StartStatePool.load(path)
    assert loaded.states == pool.states and loaded.actions == pool.actions
    assert loaded.meta["exploration"]["frames"] >= 8_000
    ale = make_ale(0)
    positions = set()
    for i in range(len(loaded)):
        ale.restoreState(loaded.ale_state(i))
        ram = ale.getRAM()
        assert ram[RAM_ROOM] == loaded.rooms[i]
        positions.add((int(ram[RAM_X]), int(ram[RAM_Y])))
        replayed = replay(loaded.actions[i]).getRAM()
        assert (replayed == ram).all()
    assert len(positions) == len(loaded)
    assert len(loaded.subset([7])) == 0


def test_corrupt_pool_file_is_a_value_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pool")
    with pytest.raises(ValueError, match=r"garbage\.pt.*rebuild it with"):
        StartStatePool.load(garbage)
    wrong_version = tmp_path / "old.pt"
    torch.save({"version": 0, "game": "montezuma_revenge"}, wrong_version)
    with pytest.raises(ValueError, match=r"old\.pt.*version"):
        StartStatePool.load(wrong_version)
    bad_state = tmp_path / "bad_state.pt"
    pool = StartStatePool(states=[b"\x00" * 16], rooms=[1], entrance_rooms=[-1], levels=[0])
    pool.save(bad_state)
    with pytest.raises(ValueError, match=r"bad_state\.pt.*corrupt"):
        StartStatePool.load(bad_state)
    with pytest.raises(FileNotFoundError):
        StartStatePool.load(tmp_path / "missing.pt")


def test_sticky_frame_skip_and_stack_shapes():
    env = MontezumaEnv(2)
    assert env._ales[0].getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_spec.n == 18 and env.action_spec.dtype == torch.int64
    td = env.reset()
    assert td["pixels"].shape == (2, 4, 84, 84) and td["pixels"].dtype == torch.uint8
    for _ in range(3):
        td["action"] = env.action_spec.rand()
        step = env.step(td)
        nxt = step["next"]
        assert torch.equal(nxt["pixels"][:, :3], td["pixels"][:, 1:])
        assert nxt["reward"].shape == (2, 1)
        td = nxt.clone()
    assert [ale.getEpisodeFrameNumber() for ale in env._ales] == [12, 12]
    env.close()


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Dense [n_out, n_in] area-averaging matrix in float64: overlap of each output interval."""
    scale = n_in / n_out
    lo, hi = np.arange(n_out)[:, None] * scale, (np.arange(n_out)[:, None] + 1) * scale
    pixels = np.arange(n_in)[None, :]
    return np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None) / scale


def test_area_resize_rounds_the_exact_area_mean():
    screens = np.random.default_rng(0).integers(0, 256, (3, 210, 160), dtype=np.uint8)
    screens[2] = 255  # the largest sums must not overflow the integer accumulator
    mean = _area_matrix(210, 84) @ screens.astype(np.float64) @ _area_matrix(160, 84).T
    frames = area_resize(screens)
    assert frames.shape == (3, 84, 84) and frames.dtype == np.uint8
    assert np.abs(frames - mean).max() <= 0.5 + 1e-9
    assert (frames[2] == 255).all()


def test_ale_frames_match_the_vector_backend_at_the_game_start():
    ale, vector = MontezumaEnv(2), MontezumaEnv(2, backend="vector")
    diff = ale.reset()["pixels"].int() - vector.reset()["pixels"].int()
    assert diff.abs().max() <= 1
    ale.close()
    vector.close()


def test_life_loss_is_not_terminal():
    env = MontezumaEnv(1, sticky_prob=0.0)
    td = env.reset()
    lives = td["lives"].item()
    right = torch.tensor([3])  # walking right off the start ledge is a deadly fall
    for _ in range(100):
        td["action"] = right
        nxt = env.step(td)["next"]
        if nxt["lives"].item() < lives:
            break
        td = nxt.clone()
    else:
        pytest.fail("walking off the ledge lost no life in 100 steps")
    assert not nxt["done"].any() and not nxt["episode_end"].any()
    td = nxt.clone()
    td["action"] = right
    assert not env.step(td)["next", "done"].any()
    env.close()


def test_truncation_partial_reset_and_episode_statistics():
    env = MontezumaEnv(2, max_episode_steps=3, sticky_prob=0.0)
    td = env.reset()
    noop = torch.zeros(2, dtype=torch.int64)
    for _ in range(2):
        td["action"] = noop
        td = env.step(td)["next"].clone()
    td["_reset"] = torch.tensor([[True], [False]])
    reset = env.reset(td)
    assert [ale.getEpisodeFrameNumber() for ale in env._ales] == [0, 8]
    assert torch.equal(reset["pixels"][1], td["pixels"][1])
    for expected_end in ([False, True], [False, False], [True, False]):
        reset["action"] = noop
        out = env.step(reset)["next"]
        assert out["truncated"].view(-1).tolist() == expected_end
        assert out["episode_end"].tolist() == expected_end
        assert not out["terminated"].any()
        reset = env.reset(out.clone().set("_reset", out["done"].clone()))
    assert out["episode_rooms_visited"].tolist() == [1, 1]
    assert out["episode_return"].tolist() == [0.0, 0.0]
    env.close()


@pytest.mark.parametrize("backend", ["ale", "vector"])
def test_specs_and_collector(backend):
    env = MontezumaEnv(2, backend=backend)
    check_env_specs(env)
    collector = Collector(env, policy=None, frames_per_batch=32, total_frames=64)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2 and batches[0].shape == (2, 16)
    rooms = batches[-1]["next", "room"]
    if backend == "ale":
        assert (rooms == START_ROOM).all()
        assert (batches[-1]["next", "episode_rooms_visited"] >= 1).all()
    else:
        assert (rooms == -1).all()


def test_vector_backend_cannot_restore_states(room7_pool):
    with pytest.raises(ValueError, match="cannot restore"):
        MontezumaEnv(2, backend="vector", start_states=room7_pool)
