"""Room-7 demonstrations for π* (issue 16.1), in the spirit of Go-Explore's robustification
(Ecoffet et al. 2021): the explorer finds, from each start state of the FAR pool, action sequences
that succeed in Room 7 (a reward, a new item, or leaving by a passage other than the entrance:
the env's ``far_success``), and π* learns them by behavioural cloning
(``lit_rl.pretraining.montezuma_clone``). The same frames are the BC-replay data of fine-tuning.

A demonstration is (start state, actions): the start state is a pool state, restored as
``MontezumaEnv`` restores it (one NOOP frame renders it), and the actions replay deterministically
from there without sticky actions. Each is replayed through ``MontezumaEnv`` itself, so its frames
are exactly what a policy sees, and it is kept only if the env reports the Room-7 success on its
last step. ``extend_starts`` adds start states a policy reached (DAgger-style: demonstrations from
where π* actually goes under sticky actions).

    python -m lit_rl.experts.montezuma_demos --pool pools/montezuma_room7.pt --per-state 4 \
        --out data/montezuma_demos          (make montezuma-demos)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ale_py
import numpy as np
import torch
from tensordict import TensorDict

from lit_rl.datasets.montezuma_trajectories import DEMOS, FRAMES, KEYS, META
from lit_rl.envs.montezuma import MontezumaEnv, far_success_events
from lit_rl.envs.montezuma_states import (
    RAM_INVENTORY,
    RAM_ROOM,
    RAM_X,
    RAM_Y,
    StartStatePool,
    make_ale,
)
from lit_rl.experts.montezuma_explorer import cell_weights
from lit_rl.safe_load import safe_load

FRAME_SKIP = 4


@dataclass
class Demonstration:
    """Actions (minimal-action-set indices) that succeed in `room` from the serialised `start`."""

    start: bytes
    entrance: int
    room: int
    actions: bytes


@dataclass
class _Cell:
    state: ale_py.ALEState
    actions: bytes
    chosen: int = 0
    seen: int = 0
    score: float = 0.0


def search_success(
    start: bytes,
    entrance: int,
    seed: int,
    budget_frames: int = 400_000,
    *,
    explore_steps: int = 60,
    repeat_action_prob: float = 0.9,
    grid: int = 8,
    settle_steps: int = 12,
) -> bytes | None:
    """Go-Explore inside the start room: the shortest-found action sequence that succeeds.

    Cells are (x // grid, y // grid, inventory) of states in the start room; each iteration picks a
    cell (rarely chosen first, `cell_weights`), restores it and walks randomly, repeating the last
    action with `repeat_action_prob`. A walk ends at a life loss or on leaving the room. A success
    counts only if the next `settle_steps` steps of the same walk lose no life (a jump onto a coin
    that kills on landing is no skill to learn). Returns None if `budget_frames` runs out.
    """
    rng = np.random.default_rng(seed)
    ale = make_ale(seed, sticky_prob=0.0)
    actions = ale.getMinimalActionSet()
    ram = np.empty(128, dtype=np.uint8)
    ale.restoreState(ale_py.ALEState(start))
    ale.act(actions[0])  # as MontezumaEnv's reset: one NOOP frame after the restore
    ale.getRAM(ram)
    room = int(ram[RAM_ROOM])
    archive = {(-1,): _Cell(ale.cloneState(), b"")}
    frames = 0
    while frames < budget_frames:
        cells = list(archive.values())
        weights = cell_weights(cells)
        origin = cells[rng.choice(len(cells), p=weights / weights.sum())]
        origin.chosen += 1
        ale.restoreState(origin.state)
        walk = bytearray(origin.actions)
        lives = ale.lives()
        action = int(rng.integers(len(actions)))
        success_at = None
        for step in range(explore_steps + settle_steps):
            if success_at is None and step >= explore_steps:
                break
            if rng.random() > repeat_action_prob:
                action = int(rng.integers(len(actions)))
            ale.getRAM(ram)
            room_before, inventory_before = int(ram[RAM_ROOM]), int(ram[RAM_INVENTORY])
            reward = sum(ale.act(actions[action]) for _ in range(FRAME_SKIP))
            frames += FRAME_SKIP
            walk.append(action)
            ale.getRAM(ram)
            lost = ale.game_over() or ale.lives() < lives
            if lost:
                break
            if success_at is not None:
                if len(walk) - success_at >= settle_steps:
                    return bytes(walk[:success_at])
                continue
            event = far_success_events(
                np.array([reward]), np.array([room_before]), np.array([int(ram[RAM_ROOM])]),
                np.array([inventory_before]), np.array([int(ram[RAM_INVENTORY])]),
                np.array([room]), np.array([entrance]), np.array([False]),
            )[0]  # fmt: skip
            if event:
                success_at = len(walk)
                continue
            if int(ram[RAM_ROOM]) != room:
                break
            key = (int(ram[RAM_X]) // grid, int(ram[RAM_Y]) // grid, int(ram[RAM_INVENTORY]))
            known = archive.get(key)
            if known is None or len(walk) < len(known.actions):
                cell = _Cell(ale.cloneState(), bytes(walk))
                if known is not None:
                    cell.chosen, cell.seen = known.chosen, known.seen
                archive[key] = cell
            else:
                known.seen += 1
    return None


@torch.no_grad()
def replay_demonstration(demo: Demonstration) -> tuple[TensorDict, bool, int]:
    """Play `demo` through `MontezumaEnv` (no sticky actions) from its start state: the frames and
    actions as a [T] TensorDict of `KEYS`, whether the env reported the FAR success on the last
    step, and the room the agent ended in."""
    pool = StartStatePool(states=[demo.start], rooms=[demo.room], entrance_rooms=[demo.entrance], levels=[0])
    env = MontezumaEnv(1, start_states=pool, sticky_prob=0.0, far_rooms=(demo.room,))
    td = env.reset()
    steps = []
    for action in demo.actions:
        td["action"] = torch.tensor([action])
        out = env.step(td)
        steps.append(out.select("pixels", "action", "room", "x", "y", "keys").clone())
        td = out["next"].clone()
    env.close()
    frames = torch.cat(steps) if steps else TensorDict({}, [0])
    return frames, bool(td["far_success"][0]), int(td["room"][0])


def build_demonstrations(
    pool: StartStatePool,
    per_state: int,
    seed: int = 0,
    budget_frames: int = 400_000,
    log=None,
) -> list[Demonstration]:
    """Up to `per_state` demonstrations from every pool state (different search seeds), each
    checked by replay in `MontezumaEnv`; duplicates of an action sequence are dropped."""
    demos: list[Demonstration] = []
    for index in range(len(pool)):
        found: set[bytes] = set()
        for attempt in range(per_state):
            actions = search_success(
                pool.states[index], pool.entrance_rooms[index], seed * 10_007 + index * 101 + attempt,
                budget_frames,
            )  # fmt: skip
            if actions is None or actions in found:
                continue
            demo = Demonstration(pool.states[index], pool.entrance_rooms[index], pool.rooms[index], actions)
            _, success, _ = replay_demonstration(demo)
            if success:
                found.add(actions)
                demos.append(demo)
        if log is not None:
            log(f"state {index}: {len(found)} demonstrations, lengths {sorted(len(a) for a in found)}")
    return demos


def save_demonstrations(demos: Sequence[Demonstration], out: str | Path, meta: dict) -> Path:
    """Write the demonstrations (``demos.pt``: start states, entrances, rooms, actions) and their
    replayed frames in the trajectory-folder format BC replay reads (``frames/``, ``meta.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = []
    for episode, demo in enumerate(demos):
        frames, _, _ = replay_demonstration(demo)
        frames["episode"] = torch.full((len(demo.actions),), episode)
        frames["step"] = torch.arange(len(demo.actions))
        chunks.append(frames.select(*KEYS))
    data = torch.cat(chunks)
    shutil.rmtree(out / FRAMES, ignore_errors=True)  # a smaller set must not keep old files
    data.memmap(out / FRAMES)
    torch.save(
        {
            "starts": [torch.frombuffer(bytearray(d.start), dtype=torch.uint8) for d in demos],
            "entrances": [d.entrance for d in demos],
            "rooms": [d.room for d in demos],
            "actions": [torch.frombuffer(bytearray(d.actions), dtype=torch.uint8) for d in demos],
        },
        out / DEMOS,
    )
    lengths = [len(d.actions) for d in demos]
    meta = {
        **meta,
        "episodes": len(demos),
        "frames": int(data.numel()),
        "length_mean": float(np.mean(lengths)),
    }
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    data = safe_load(Path(path) / DEMOS)
    return [
        Demonstration(s.numpy().tobytes(), int(e), int(r), a.numpy().tobytes())
        for s, e, r, a in zip(data["starts"], data["entrances"], data["rooms"], data["actions"], strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Find Room-7 demonstrations from the pool's start states and save them for BC."""
    parser = argparse.ArgumentParser(
        prog="python -m lit_rl.experts.montezuma_demos", description=main.__doc__
    )
    parser.add_argument("--pool", type=Path, default=Path("pools/montezuma_room7.pt"))
    parser.add_argument("--room", type=int, default=7)
    parser.add_argument("--per-state", type=int, default=4, help="demonstrations sought per start state")
    parser.add_argument("--budget", type=int, default=400_000, help="emulator frames per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/montezuma_demos"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pool = StartStatePool.load(args.pool).subset([args.room])
    if len(pool) == 0:
        print(f"error: {args.pool} holds no state in room {args.room}; rebuild it with make montezuma-pool")
        return 2
    started = time.perf_counter()
    demos = build_demonstrations(
        pool, args.per_state, args.seed, args.budget, log=lambda s: print(s, file=sys.stderr, flush=True)
    )
    if not demos:
        print(
            f"error: no Room-{args.room} success found from {len(pool)} states; raise --budget",
            file=sys.stderr,
        )
        return 1
    meta = {"pool": str(args.pool), "room": args.room, "seed": args.seed, "per_state": args.per_state,
            "budget_frames": args.budget, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    save_demonstrations(demos, args.out, meta)
    print((args.out / META).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
