"""Montezuma's Revenge as a batched TorchRL environment with the paper's settings (section 4).

Settings: sticky actions p = 0.25, frame skip 4 (max over the last two frames), 84×84 grey frames
stacked 4, 4500 agent steps per episode (truncation), a life loss is not terminal, game over is.

Two back-ends with the same specs:
- ``"ale"`` (default): one `ALEInterface` per env, stepped in a Python loop. It reads RAM every step
  (room, level, keys, inventory, x, y; addresses in `montezuma_states`) and restores saved states,
  so it serves both the game start and start-state pools (the FAR subspace: Room 7).
- ``"vector"``: ale-py's `AtariVectorEnv` (C++ threads). It exposes no RAM and no per-env restore,
  so it only starts at the game start and reports -1 for every RAM-derived key (room, rooms visited,
  far success stay unknown). Use it where raw frames/s matter more than room statistics.

FAR success (paper section 4, "success rate in Room 7"): in an episode that starts in one of
``far_rooms``, a step succeeds while the agent is still in its start room and it earns a positive
reward, picks up a new item (a new bit in the inventory byte), or leaves to a room other than the
entrance room the pool recorded (steps with a life loss or game over never count: the game moves the
player then, not the agent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from ale_py.vector_env import AtariVectorEnv
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from lit_rl.envs.montezuma_states import (
    GAME,
    NO_ROOM,
    RAM_INVENTORY,
    RAM_LEVEL,
    RAM_ROOM,
    RAM_X,
    RAM_Y,
    StartStatePool,
    count_keys,
    make_ale,
)

SCREEN_SHAPE = (210, 160)
FRAME_SIZE = 84
STACK = 4
MAX_EPISODE_STEPS = 4500
ROOMS_PER_LEVEL_SLOT = 32
LEVEL_SLOTS = 8
RAM_KEYS = ("room", "level", "keys", "inventory", "x", "y")


def make_vector_env(
    num_envs: int,
    frame_skip: int = 4,
    sticky_prob: float = 0.25,
    full_action_space: bool = False,
    max_episode_steps: int = MAX_EPISODE_STEPS,
) -> AtariVectorEnv:
    """ale-py's vector env with the paper's settings (84×84 grey, stack 4, life loss not terminal).

    Shared by ``MontezumaEnv``'s vector back-end and the benchmark's raw baseline, so both always
    run the same emulator settings.
    """
    return AtariVectorEnv(
        GAME,
        num_envs,
        frameskip=frame_skip,
        repeat_action_probability=sticky_prob,
        full_action_space=full_action_space,
        stack_num=STACK,
        img_height=FRAME_SIZE,
        img_width=FRAME_SIZE,
        grayscale=True,
        maxpool=True,
        noop_max=0,
        use_fire_reset=False,
        episodic_life=False,
        reward_clipping=False,
        max_num_frames_per_episode=max_episode_steps * frame_skip,
        autoreset_mode="SameStep",
    )


def _area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Index and integer weight tables of area interpolation (as OpenCV's INTER_AREA) along one axis.

    Output pixel j averages the input interval [j·s, (j+1)·s) with s = n_in / n_out, each input
    pixel weighted by its overlap. Lengths are counted in units of 1/(n_out/g) input pixel
    (g = gcd), so overlaps are whole numbers summing to the returned divisor n_in/g: 5 for
    210→84 and 40 for 160→84, so both passes fit uint16 (255·5·40 < 2¹⁶) and the result rounds
    exactly. An interval touches at most 3 input pixels, so the resize is 6 gathers. In NumPy,
    not torch: torch's intra-op threads fight the emulator loop for the 2 cores; integer gathers
    (16 envs: 0.5 ms) beat float32 gathers (1.1 ms) and a dense float matrix product (1.4 ms).
    The frames match ale-py's vector env to within one grey level.
    """
    g = math.gcd(n_in, n_out)
    pixel, span = n_out // g, n_in // g
    spans = [range(j * span // pixel, -(-(j + 1) * span // pixel)) for j in range(n_out)]
    width = max(len(covered) for covered in spans)
    index = np.zeros((width, n_out), dtype=np.intp)
    weight = np.zeros((width, n_out), dtype=np.uint16)
    for j, covered in enumerate(spans):
        for k, i in enumerate(covered):
            index[k, j] = i
            weight[k, j] = min((j + 1) * span, (i + 1) * pixel) - max(j * span, i * pixel)
    return index, weight, span


_ROWS = _area_weights(SCREEN_SHAPE[0], FRAME_SIZE)
_COLS = _area_weights(SCREEN_SHAPE[1], FRAME_SIZE)


def area_resize(screen: np.ndarray) -> np.ndarray:
    """[N, 210, 160] uint8 screens → [N, 84, 84] area means (`_area_weights`), rounded to nearest."""
    (ri, rw, rd), (ci, cw, cd) = _ROWS, _COLS
    rows = sum(screen[:, ri[k], :] * rw[k][:, None] for k in range(len(ri)))
    frame = sum(rows[:, :, ci[k]] * cw[k] for k in range(len(ci)))
    # frame is rd·cd times the mean; adding half the divisor before the floor division rounds.
    divisor = rd * cd
    return ((frame + divisor // 2) // divisor).astype(np.uint8)


def far_success_events(
    reward: np.ndarray,
    room_before: np.ndarray,
    room: np.ndarray,
    inventory_before: np.ndarray,
    inventory: np.ndarray,
    start_room: np.ndarray,
    entrance_room: np.ndarray,
    moved_by_game: np.ndarray,
) -> np.ndarray:
    """Per-env success events of one step in the start room (module docstring; paper section 4).

    A step counts if it began in `start_room` and earned a positive reward, set a new inventory bit,
    or changed room to one other than `entrance_room`; room and inventory changes on steps where
    `moved_by_game` (life lost, game over) are the game resetting things, not the agent's doing.
    """
    new_item = (inventory & ~inventory_before) != 0
    left_elsewhere = (room != room_before) & (room != entrance_room)
    agent_event = (new_item | left_elsewhere) & ~moved_by_game
    return (room_before == start_room) & ((reward > 0) | agent_event)


class MontezumaEnv(EnvBase):
    """``num_envs`` Montezuma games stepped together; see the module docstring for the settings.

    ``start_states`` (a pool or a pool file) makes every reset restore a state drawn uniformly from
    the pool; None starts at the game start. ``far_rooms`` are the start rooms whose episodes track
    FAR success. ``full_action_space`` selects ALE's 18 legal actions instead of the game's minimal
    set (for Montezuma both are the same 18 actions in the same order).
    """

    # TorchRL wraps an EnvBase whose instance has `frame_skip > 1` in a FrameSkipTransform (so each
    # agent step would repeat 4 × 4 frames) unless the class says it skips frames itself.
    _has_frame_skip = True

    def __init__(
        self,
        num_envs: int = 8,
        *,
        start_states: StartStatePool | str | Path | None = None,
        backend: Literal["ale", "vector"] = "ale",
        full_action_space: bool = False,
        sticky_prob: float = 0.25,
        frame_skip: int = 4,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        far_rooms: Sequence[int] = (7,),
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if backend not in ("ale", "vector"):
            raise ValueError(f"unknown backend {backend!r}: choose 'ale' or 'vector'")
        if isinstance(start_states, str | Path):
            start_states = StartStatePool.load(start_states)
        if start_states is not None and backend == "vector":
            raise ValueError(
                "AtariVectorEnv cannot restore per-env states: use backend='ale' with start_states"
            )
        if start_states is not None and len(start_states) == 0:
            raise ValueError("start_states is empty: build a pool that reached the wanted rooms")
        if frame_skip < 2:
            raise ValueError(f"frame_skip must be >= 2 (max over the last two frames), got {frame_skip}")
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.num_envs = num_envs
        self.backend = backend
        self.start_states = start_states
        self.full_action_space = full_action_space
        self.sticky_prob = sticky_prob
        self.frame_skip = frame_skip
        self.max_episode_steps = max_episode_steps
        self.far_rooms = np.asarray(sorted(far_rooms), dtype=np.int64)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._restorable = (
            None if start_states is None else [start_states.ale_state(i) for i in range(len(start_states))]
        )
        n = num_envs
        self._steps = np.zeros(n, dtype=np.int64)
        self._return = np.zeros(n, dtype=np.float64)
        # Replaced by a new array at every step/reset, never written in place, so the tensors
        # handed out (torch.from_numpy views) stay valid.
        self._pixels = np.zeros((n, STACK, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self._lives = np.zeros(n, dtype=np.int64)
        self._ram = np.zeros((n, 128), dtype=np.uint8)
        self._visited = np.zeros((n, LEVEL_SLOTS * ROOMS_PER_LEVEL_SLOT), dtype=bool)
        self._start_room = np.full(n, NO_ROOM, dtype=np.int64)
        self._entrance = np.full(n, NO_ROOM, dtype=np.int64)
        self._armed = np.zeros(n, dtype=bool)
        self._far_success = np.zeros(n, dtype=bool)
        self._vec: AtariVectorEnv | None = None
        self._vec_started = False
        self._vec_restarted = np.zeros(n, dtype=bool)
        self._vec_first_obs = np.zeros((n, STACK, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        if backend == "ale":
            self._screens = np.zeros((n, 2, *SCREEN_SHAPE), dtype=np.uint8)
            self._screen_max = np.zeros((n, *SCREEN_SHAPE), dtype=np.uint8)
            self._screen_views = [(screens[0], screens[1]) for screens in self._screens]
            self._make_ales()
            n_actions = len(self._actions)
        else:
            self._vec = make_vector_env(n, frame_skip, sticky_prob, full_action_space, max_episode_steps)
            n_actions = int(self._vec.single_action_space.n)
        self._make_specs(n, n_actions)

    def _make_ales(self) -> None:
        self._ales = [make_ale(self._seed * 1000 + i, self.sticky_prob) for i in range(self.num_envs)]
        ale = self._ales[0]
        actions = ale.getLegalActionSet() if self.full_action_space else ale.getMinimalActionSet()
        self._actions = list(actions)
        self._noop = self._actions[0]

    def _make_specs(self, n: int, n_actions: int) -> None:
        def integer() -> Unbounded:
            return Unbounded(shape=(n,), dtype=torch.int64, device=self.device)

        def flag(shape: tuple[int, ...] = (n,)) -> Binary:
            return Binary(shape=shape, dtype=torch.bool, device=self.device)

        self.observation_spec = Composite(
            pixels=Bounded(
                0,
                255,
                shape=(n, STACK, FRAME_SIZE, FRAME_SIZE),
                dtype=torch.uint8,
                device=self.device,
            ),
            **{key: integer() for key in RAM_KEYS},
            lives=integer(),
            start_room=integer(),
            far_success=flag(),
            episode_return=Unbounded(shape=(n,), dtype=torch.float32, device=self.device),
            episode_rooms_visited=integer(),
            episode_far_success=flag(),
            episode_end=flag(),
            shape=(n,),
        )
        self.action_spec = Categorical(n_actions, shape=(n,), dtype=torch.int64, device=self.device)
        self.reward_spec = Unbounded(shape=(n, 1), device=self.device)
        self.full_done_spec = Composite(
            done=flag((n, 1)),
            terminated=flag((n, 1)),
            truncated=flag((n, 1)),
            shape=(n,),
        )

    # -- ALE back-end -------------------------------------------------------------------------

    def _frames(self) -> np.ndarray:
        """Max over the last two screens, area-resized to 84×84 (uint8, [N, 84, 84])."""
        return area_resize(np.maximum(self._screens[:, 0], self._screens[:, 1], out=self._screen_max))

    def _ale_step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step every emulator one agent step, writing screens and RAM into the preallocated buffers.

        Serial on purpose: ALE holds the GIL while it emulates (two threads stepping two ALEs run
        no faster than one). Per-env results go to lists, cheaper than NumPy scalar writes.
        """
        rewards, over, lives = [], [], []
        skipped = range(self.frame_skip - 2)
        actions = [self._actions[a] for a in action.tolist()]
        for ale, act, (second_last, last), ram in zip(self._ales, actions, self._screen_views, self._ram):
            total = 0
            for _ in skipped:
                total += ale.act(act)
            total += ale.act(act)
            ale.getScreenGrayscale(second_last)
            total += ale.act(act)
            ale.getScreenGrayscale(last)
            ale.getRAM(ram)
            rewards.append(total)
            over.append(ale.game_over())
            lives.append(ale.lives())
        self._lives[:] = lives
        return np.array(rewards, dtype=np.float64), np.array(over, dtype=bool)

    def _ale_reset(self, index: np.ndarray) -> None:
        for i in index:
            ale = self._ales[i]
            if self._restorable is None:
                ale.reset_game()
                self._entrance[i] = NO_ROOM
            else:
                j = int(self._rng.integers(len(self._restorable)))
                ale.restoreState(self._restorable[j])
                # ALE does not save the frame buffer: one NOOP frame renders the restored screen.
                ale.act(self._noop)
                self._entrance[i] = self.start_states.entrance_rooms[j]
            ale.getScreenGrayscale(self._screens[i, 0])
            self._screens[i, 1] = self._screens[i, 0]
            ale.getRAM(self._ram[i])
            self._lives[i] = ale.lives()
        frames = self._frames()
        # As ale-py's vector env: the new frame last, the older stack slots black.
        pixels = self._pixels.copy()
        pixels[index] = 0
        pixels[index, -1] = frames[index]
        self._pixels = pixels

    # -- vector back-end ----------------------------------------------------------------------

    def _vec_step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step; an env that ended was already reset by ale-py (SAME_STEP, the only autoreset mode
        its C++ side accepts besides NEXT_STEP), so keep its first frames for the coming `_reset`
        and report the final frames (`final_obs`) as this step's observation."""
        obs, reward, terminated, truncated, info = self._vec.step(action.astype(np.int64))
        pixels = np.array(obs)
        ended = terminated | truncated
        if ended.any():
            self._vec_restarted[ended] = True
            self._vec_first_obs[ended] = pixels[ended]
            pixels[ended] = info["final_obs"][ended]
        self._pixels = pixels
        self._lives[:] = info["lives"]
        return reward.astype(np.float64), terminated, truncated

    def _vec_reset(self, mask: np.ndarray) -> None:
        if not self._vec_started:
            obs, info = self._vec.reset(seed=self._seed)
            self._vec_started = True
            self._vec_restarted[:] = False
            self._pixels = np.array(obs)
            self._lives[:] = info["lives"]
            return
        pixels = self._pixels.copy()
        restarted = mask & self._vec_restarted
        pixels[restarted] = self._vec_first_obs[restarted]
        self._vec_restarted[restarted] = False
        pending = mask & ~restarted
        if pending.any():
            obs, info = self._vec.reset(options={"reset_mask": pending})
            pixels[pending] = obs[pending]
            self._lives[pending] = info["lives"][pending]
        self._pixels = pixels

    # -- EnvBase ------------------------------------------------------------------------------

    def _ram_values(self) -> dict[str, np.ndarray]:
        if self.backend == "vector":
            unknown = np.full(self.num_envs, -1, dtype=np.int64)
            return {key: unknown for key in RAM_KEYS}
        inventory = self._ram[:, RAM_INVENTORY].astype(np.int64)
        return {
            "room": self._ram[:, RAM_ROOM].astype(np.int64),
            "level": self._ram[:, RAM_LEVEL].astype(np.int64),
            "keys": count_keys(inventory),
            "inventory": inventory,
            "x": self._ram[:, RAM_X].astype(np.int64),
            "y": self._ram[:, RAM_Y].astype(np.int64),
        }

    def _mark_visited(self, ram: dict[str, np.ndarray]) -> None:
        if self.backend == "ale":
            slot = np.minimum(ram["level"], LEVEL_SLOTS - 1) * ROOMS_PER_LEVEL_SLOT + ram["room"]
            self._visited[np.arange(self.num_envs), slot] = True

    def _output(self, ram: dict[str, np.ndarray], far_success: np.ndarray, end: np.ndarray) -> TensorDict:
        rooms_visited = self._visited.sum(1) if self.backend == "ale" else np.full(self.num_envs, -1)
        values = {key: torch.from_numpy(value.copy()) for key, value in ram.items()}
        return TensorDict(
            {
                "pixels": torch.from_numpy(self._pixels),
                **values,
                "lives": torch.from_numpy(self._lives.copy()),
                "start_room": torch.from_numpy(self._start_room.copy()),
                "far_success": torch.from_numpy(far_success),
                "episode_return": torch.from_numpy(self._return.astype(np.float32)),
                "episode_rooms_visited": torch.from_numpy(rooms_visited.astype(np.int64)),
                "episode_far_success": torch.from_numpy(self._far_success.copy()),
                "episode_end": torch.from_numpy(end),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        mask = np.ones(self.num_envs, dtype=bool) if mask is None else mask.reshape(-1).cpu().numpy()
        index = np.flatnonzero(mask)
        if self.backend == "ale":
            self._ale_reset(index)
        else:
            self._vec_reset(mask)
        ram = self._ram_values()
        self._steps[index] = 0
        self._return[index] = 0.0
        self._visited[index] = False
        self._far_success[index] = False
        self._mark_visited(ram)
        self._start_room[index] = ram["room"][index]
        self._armed[index] = np.isin(ram["room"][index], self.far_rooms) & (self.backend == "ale")
        out = self._output(ram, np.zeros(self.num_envs, dtype=bool), np.zeros(self.num_envs, dtype=bool))
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict["action"].reshape(-1).cpu().numpy()
        lives_before = self._lives.copy()
        if self.backend == "ale":
            room_before = self._ram[:, RAM_ROOM].astype(np.int64)
            inventory_before = self._ram[:, RAM_INVENTORY].astype(np.int64)
            reward, over = self._ale_step(action)
            frames = self._frames()
            self._pixels = np.concatenate([self._pixels[:, 1:], frames[:, None]], axis=1)
        else:
            reward, over, vec_truncated = self._vec_step(action)
        ram = self._ram_values()
        self._steps += 1
        self._return += reward
        self._mark_visited(ram)
        far_success = np.zeros(self.num_envs, dtype=bool)
        if self.backend == "ale":
            far_success = self._armed & far_success_events(
                reward,
                room_before,
                ram["room"],
                inventory_before,
                ram["inventory"],
                self._start_room,
                self._entrance,
                moved_by_game=over | (self._lives < lives_before),
            )
            self._far_success |= far_success
        terminated = over
        truncated = (self._steps >= self.max_episode_steps) & ~terminated
        if self.backend == "vector":
            truncated |= vec_truncated & ~terminated
        done = terminated | truncated
        out = self._output(ram, far_success, done.copy())
        out.set("reward", torch.from_numpy(reward.astype(np.float32)).unsqueeze(-1))
        out.set("terminated", torch.from_numpy(terminated).unsqueeze(-1))
        out.set("truncated", torch.from_numpy(truncated).unsqueeze(-1))
        out.set("done", torch.from_numpy(done).unsqueeze(-1))
        return out

    def snapshot(self, index: int) -> tuple[bytes, int]:
        """Env `index`'s emulator state, serialised like a pool state, and the entrance room of
        its episode (the ALE back-end only): a start state for more demonstrations."""
        return self._ales[index].cloneState().serialize(), int(self._entrance[index])

    def _set_seed(self, seed: int | None) -> None:
        """Reseed pool sampling and the emulators (ALE reads its seed when a ROM loads)."""
        self._seed = 0 if seed is None else int(seed)
        self._rng = np.random.default_rng(self._seed)
        if self.backend == "ale":
            self._make_ales()
        else:
            self._vec_started = False

    def close(self, *, raise_if_closed: bool = True) -> None:
        if self.backend == "vector":
            self._vec.close()
            self._vec = None
        super().close(raise_if_closed=raise_if_closed)
