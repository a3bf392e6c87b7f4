"""Montezuma's Revenge at the emulator level: RAM layout, start-state pools, a Go-Explore builder.

The paper's FAR subspace (section 4) is "Room 7 and beyond": episodes that begin from saved emulator
states. ALE can clone and restore its state, but ale-py's vector env cannot restore per-env states,
so pools hold serialised `ALEState`s that `MontezumaEnv` restores into its own `ALEInterface`s.

RAM addresses (community facts, checked on ale-py 0.12.1 by `tests/test_montezuma.py` and the pool
builder's walks through the level):
    3   room id on the current level (the game starts in room 1)
    42  player x (grows to the right)
    43  player y (grows upwards: the start ledge is at 235, the floor below at 148)
    57  level (0 for the first pyramid)
    58  lives left in reserve (ALE's `lives()` is this + 1)
    65  inventory bit field; bits 0x02, 0x04, 0x08 are keys (the room-1 key sets one of them)
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ale_py
import numpy as np
import torch
from ale_py import roms

GAME = "montezuma_revenge"
POOL_VERSION = 1

RAM_ROOM = 3
RAM_X = 42
RAM_Y = 43
RAM_LEVEL = 57
RAM_LIVES = 58
RAM_INVENTORY = 65
KEY_BITS = 0x02 | 0x04 | 0x08

START_ROOM = 1
NO_ROOM = -1


def make_ale(seed: int, sticky_prob: float = 0.25) -> ale_py.ALEInterface:
    """An `ALEInterface` with Montezuma loaded; sticky actions are ALE's own (per frame)."""
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", int(seed) % (2**31 - 1))
    ale.setFloat("repeat_action_probability", float(sticky_prob))
    ale.loadROM(roms.get_rom_path(GAME))
    return ale


def count_keys(inventory: np.ndarray | int) -> np.ndarray | int:
    """Number of keys held, from the inventory RAM byte (scalar or array)."""
    bits = np.asarray(inventory, dtype=np.int64) & KEY_BITS
    keys = (bits >> 1 & 1) + (bits >> 2 & 1) + (bits >> 3 & 1)
    return int(keys) if np.ndim(keys) == 0 else keys


def _to_tensor(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


def _to_bytes(tensor: torch.Tensor) -> bytes:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 tensor, found {type(tensor).__name__}")
    return tensor.numpy().tobytes()


@dataclass
class StartStatePool:
    """Saved emulator states to start episodes from, with the room each is in.

    `entrance_rooms[i]` is the room the explorer came from when it last entered `rooms[i]`
    (`NO_ROOM` if it never left the start room); the env uses it to tell "left by another passage".
    `actions[i]`, when known, is the action prefix that `replay` turns into the same state from the
    game start: a portable copy of the state should a future ALE change its state format.
    """

    states: list[bytes]
    rooms: list[int]
    entrance_rooms: list[int]
    levels: list[int]
    actions: list[bytes] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    game: str = GAME

    def __post_init__(self) -> None:
        n = len(self.states)
        if len(self.actions) not in (0, n):
            raise ValueError(f"pool has {n} states but {len(self.actions)} action prefixes")
        if not (len(self.rooms) == len(self.entrance_rooms) == len(self.levels) == n):
            raise ValueError(
                f"pool lists differ in length: states {n}, rooms {len(self.rooms)}, "
                f"entrance_rooms {len(self.entrance_rooms)}, levels {len(self.levels)}"
            )

    def __len__(self) -> int:
        return len(self.states)

    def ale_state(self, index: int) -> ale_py.ALEState:
        return ale_py.ALEState(self.states[index])

    def subset(self, rooms: Iterable[int]) -> StartStatePool:
        """The states whose room is in `rooms` (e.g. only Room 7 from a pool of several rooms)."""
        wanted = set(rooms)
        keep = [i for i, r in enumerate(self.rooms) if r in wanted]
        return StartStatePool(
            states=[self.states[i] for i in keep],
            rooms=[self.rooms[i] for i in keep],
            entrance_rooms=[self.entrance_rooms[i] for i in keep],
            levels=[self.levels[i] for i in keep],
            actions=[self.actions[i] for i in keep] if self.actions else [],
            meta=dict(self.meta),
            game=self.game,
        )

    def save(self, path: str | Path) -> Path:
        """Write {"version", "game", "states", "rooms", "entrance_rooms", "levels", "actions",
        "meta"}; byte strings go in as uint8 tensors, because the safe `weights_only` loader
        refuses an empty `bytes` and any pickle protocol above torch's default 2."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "version": POOL_VERSION,
                "game": self.game,
                "states": [_to_tensor(s) for s in self.states],
                "rooms": self.rooms,
                "entrance_rooms": self.entrance_rooms,
                "levels": self.levels,
                "actions": [_to_tensor(a) for a in self.actions],
                "meta": self.meta,
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> StartStatePool:
        """Read a pool file; `weights_only=True` so a pool file can never run code when loaded."""
        path = Path(path)
        fix = f"rebuild it with `python -m lit_rl.envs.montezuma_states build --out {path}`"
        try:
            data = torch.load(path, weights_only=True)
        except FileNotFoundError:
            raise
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            raise ValueError(
                f"{path}: not a start-state pool file ({err.__class__.__name__}); {fix}"
            ) from None
        if not isinstance(data, dict) or data.get("version") != POOL_VERSION or data.get("game") != GAME:
            found = data.get("version") if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{path}: expected a {GAME} pool of version {POOL_VERSION}, found {found!r}; {fix}"
            )
        try:
            pool = cls(
                states=[_to_bytes(s) for s in data["states"]],
                rooms=[int(r) for r in data["rooms"]],
                entrance_rooms=[int(r) for r in data["entrance_rooms"]],
                levels=[int(v) for v in data["levels"]],
                actions=[_to_bytes(a) for a in data.get("actions", [])],
                meta=dict(data.get("meta", {})),
            )
            for state in pool.states:
                ale_py.ALEState(state)
        except (KeyError, TypeError, ValueError, AttributeError, SystemError) as err:
            raise ValueError(f"{path}: corrupt start-state pool ({err.__class__.__name__}); {fix}") from None
        return pool


def replay(actions: bytes, frame_skip: int = 4) -> ale_py.ALEInterface:
    """Play an action prefix (minimal-action-set indices, `frame_skip` frames each) from the game
    start without sticky actions; emulation is deterministic, so this rebuilds a pool state."""
    ale = make_ale(0, sticky_prob=0.0)
    action_set = ale.getMinimalActionSet()
    for index in actions:
        for _ in range(frame_skip):
            ale.act(action_set[index])
    return ale


@dataclass
class _Cell:
    state: ale_py.ALEState
    score: float
    actions: bytes
    room: int
    level: int
    entrance: int
    chosen: int = 0
    seen: int = 0


def _cell_weights(cells: Sequence[_Cell]) -> np.ndarray:
    """Selection weights: rarely tried cells first, times (1 + score rank)² to push the frontier.

    Score is Montezuma's progress signal (keys, doors, items); without the rank factor the explorer
    spends its budget on room 1 (measured: seed 0 reached rooms {1, 2} in 1M frames, against eleven
    rooms including Room 7 within 2M frames with it).
    """
    counts = np.array([1.0 / math.sqrt(1 + c.chosen) + 1.0 / math.sqrt(1 + c.seen) for c in cells])
    scores = np.array([c.score for c in cells])
    rank = np.searchsorted(np.unique(scores), scores)
    return counts * (1.0 + rank) ** 2


def build_pool(
    rooms_wanted: Sequence[int] | None,
    budget_frames: int,
    seed: int = 0,
    *,
    max_states_per_room: int = 200,
    explore_steps: int = 100,
    frame_skip: int = 4,
    repeat_action_prob: float = 0.95,
    grid: int = 16,
    commit_delay: int = 16,
    stop_at_cells: int | None = None,
    log_every_s: float | None = None,
) -> StartStatePool:
    """Explore with state restore (Go-Explore phase 1, Ecoffet et al. 2021); keep states per room.

    The archive is keyed by cell (level, room, x // grid, y // grid, keys). Each iteration picks a
    cell by `_cell_weights` (rarely tried and high-scoring cells first), restores it, and acts
    randomly for `explore_steps` agent steps, repeating the previous action with
    `repeat_action_prob`. A new cell, or a known one reached with a higher score (equal score: in
    fewer steps), replaces the archive entry, but only after the walk survived `commit_delay` more
    steps: Montezuma kills slowly (falls, death animation), so states just before a life loss are
    doomed. A walk ends at a life loss. Exploration runs without sticky actions, so a seed gives the
    same pool, and each cell's action prefix replays to its state (`replay`).

    `rooms_wanted` None keeps every room reached. `budget_frames` counts emulator frames
    (agent steps × `frame_skip`). With `stop_at_cells`, it stops early once every wanted room
    has that many cells. `meta["exploration"]` records what was reached and when.
    """
    rng = np.random.default_rng(seed)
    ale = make_ale(seed, sticky_prob=0.0)
    actions = ale.getMinimalActionSet()
    ram = np.empty(128, dtype=np.uint8)

    def read() -> tuple[tuple[int, ...], int, int]:
        ale.getRAM(ram)
        level, room = int(ram[RAM_LEVEL]), int(ram[RAM_ROOM])
        key = (
            level,
            room,
            int(ram[RAM_X]) // grid,
            int(ram[RAM_Y]) // grid,
            count_keys(int(ram[RAM_INVENTORY])),
        )
        return key, room, level

    start_key, room0, level0 = read()
    archive: dict[tuple[int, ...], _Cell] = {
        start_key: _Cell(ale.cloneState(), 0.0, b"", room0, level0, NO_ROOM),
    }
    first_seen_frames = {room0: 0}
    t0 = time.perf_counter()
    last_log = t0
    frames = 0
    iterations = 0
    wanted = None if rooms_wanted is None else set(int(r) for r in rooms_wanted)

    def enough() -> bool:
        if wanted is None or stop_at_cells is None:
            return False
        counts = {r: 0 for r in wanted}
        for cell in archive.values():
            if cell.room in counts:
                counts[cell.room] += 1
        return all(c >= stop_at_cells for c in counts.values())

    while frames < budget_frames:
        keys = list(archive)
        cells = [archive[k] for k in keys]
        weights = _cell_weights(cells)
        origin = cells[rng.choice(len(cells), p=weights / weights.sum())]
        origin.chosen += 1
        ale.restoreState(origin.state)
        score, walk = origin.score, bytearray(origin.actions)
        room, entrance = origin.room, origin.entrance
        lives = ale.lives()
        action = int(rng.integers(len(actions)))
        pending: list[tuple[int, tuple[int, ...], _Cell]] = []
        seen_this_walk: set[tuple[int, ...]] = set()
        for step in range(explore_steps):
            if rng.random() > repeat_action_prob:
                action = int(rng.integers(len(actions)))
            for _ in range(frame_skip):
                score += ale.act(actions[action])
            walk.append(action)
            frames += frame_skip
            if ale.game_over() or ale.lives() < lives:
                break
            key, new_room, level = read()
            if new_room != room:
                entrance, room = room, new_room
                first_seen_frames.setdefault(room, frames)
            if key not in seen_this_walk:
                seen_this_walk.add(key)
                known = archive.get(key)
                if known is not None:
                    known.seen += 1
                if (
                    known is None
                    or score > known.score
                    or (score == known.score and len(walk) < len(known.actions))
                ):
                    cell = _Cell(ale.cloneState(), score, bytes(walk), room, level, entrance)
                    pending.append((step, key, cell))
            while pending and pending[0][0] <= step - commit_delay:
                _, key_done, cell = pending.pop(0)
                known = archive.get(key_done)
                if known is not None:
                    cell.chosen, cell.seen = known.chosen, known.seen
                archive[key_done] = cell
        iterations += 1
        if iterations % 50 == 0 and enough():
            break
        if log_every_s is not None and time.perf_counter() - last_log > log_every_s:
            last_log = time.perf_counter()
            print(
                f"[build_pool] {frames} frames, {last_log - t0:.0f}s, {len(archive)} cells, "
                f"rooms {sorted(first_seen_frames)}",
                file=sys.stderr,
                flush=True,
            )

    by_room: dict[int, list[_Cell]] = {}
    for cell in archive.values():
        if wanted is None or cell.room in wanted:
            by_room.setdefault(cell.room, []).append(cell)
    chosen: list[_Cell] = []
    for room in sorted(by_room):
        cells = by_room[room]
        picks = rng.permutation(len(cells))[:max_states_per_room]
        chosen.extend(cells[i] for i in sorted(picks))
    elapsed = time.perf_counter() - t0
    return StartStatePool(
        states=[c.state.serialize() for c in chosen],
        rooms=[c.room for c in chosen],
        entrance_rooms=[c.entrance for c in chosen],
        levels=[c.level for c in chosen],
        actions=[c.actions for c in chosen],
        meta={
            "exploration": {
                "seed": seed,
                "frame_skip": frame_skip,
                "frames": frames,
                "seconds": round(elapsed, 1),
                "iterations": iterations,
                "cells": len(archive),
                "rooms_reached": sorted(first_seen_frames),
                "first_seen_frames": dict(sorted(first_seen_frames.items())),
                "max_score": max(c.score for c in archive.values()),
                "rooms_wanted": None if wanted is None else sorted(wanted),
            },
        },
    )


def _describe(pool: StartStatePool) -> str:
    rooms: dict[int, int] = {}
    for r in pool.rooms:
        rooms[r] = rooms.get(r, 0) + 1
    lines = [f"{len(pool)} states; per room: {dict(sorted(rooms.items()))}"]
    if "exploration" in pool.meta:
        lines.append(f"exploration: {pool.meta['exploration']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`build` a pool by exploration, or print `info` on a pool file."""
    parser = argparse.ArgumentParser(prog="python -m lit_rl.envs.montezuma_states", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="explore with state restore and save states per room")
    build.add_argument("--rooms", type=int, nargs="*", default=None, help="rooms to keep (default: all)")
    build.add_argument("--frames", type=int, default=2_000_000, help="emulator frame budget")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--per-room", type=int, default=200, help="max states kept per room")
    build.add_argument(
        "--stop-at-cells", type=int, default=None, help="stop once each wanted room has N cells"
    )
    build.add_argument("--out", type=Path, default=Path("pools/montezuma_room7.pt"))
    info = sub.add_parser("info", help="summarise a pool file")
    info.add_argument("path", type=Path)
    args = parser.parse_args(argv)

    if args.command == "info":
        print(_describe(StartStatePool.load(args.path)))
        return 0
    pool = build_pool(
        args.rooms or None,
        args.frames,
        args.seed,
        max_states_per_room=args.per_room,
        stop_at_cells=args.stop_at_cells,
        log_every_s=10.0,
    )
    print(_describe(pool))
    if len(pool) == 0:
        print(f"no state reached rooms {args.rooms}; nothing written to {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {pool.save(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
