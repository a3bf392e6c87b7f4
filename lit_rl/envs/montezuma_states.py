"""Montezuma's Revenge at the emulator level: RAM layout and start-state pools.

The pools are built by the Go-Explore explorer in ``lit_rl.experts.montezuma_explorer``.

The paper's FAR subspace (section 4) is "Room 7 and beyond": episodes that begin from saved emulator
states. ALE can clone and restore its state, but ale-py's vector env cannot restore per-env states,
so pools hold serialised `ALEState`s that `MontezumaEnv` restores into its own `ALEInterface`s.

RAM addresses (community facts, checked on ale-py 0.12.1 by `tests/test_montezuma.py` and the
explorer's walks through the level):
    3   room id on the current level (the game starts in room 1)
    42  player x (grows to the right)
    43  player y (grows upwards: the start ledge is at 235, the floor below at 148)
    57  level (0 for the first pyramid)
    58  lives left in reserve (ALE's `lives()` is this + 1)
    65  inventory bit field; bits 0x02, 0x04, 0x08 are keys (the room-1 key sets one of them)
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ale_py
import numpy as np
import torch
from ale_py import roms

from lit_rl.safe_load import UntrustedFile, safe_load

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
            data = safe_load(path)
        except (FileNotFoundError, UntrustedFile):
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
