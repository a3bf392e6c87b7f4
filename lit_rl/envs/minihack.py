"""The two-phase MiniHack level as a batched TorchRL environment (docs/minihack.md).

Each of the ``num_games`` games is MiniHack's own Gymnasium environment (``gymnasium.make`` of the
id this module registers, a ``MiniHackNavigation`` on ``minihack_level.DES_FILE``), stepped in a
Python loop and written into one batch, with the observation keys of ``NetHackBatchEnv`` (the
tty screen, cursor and previous action that ScaledNet reads), so the NetHack scenario's policy,
collector, retention methods and evaluator run on it unchanged. The action space is NLE's full key
set (indices of ``nle.nethack.ACTIONS``, ScaledNet's output); the scenario's policy only ever picks
``MOVE_ACTIONS`` (MiniHack's navigation set), and ``rand_action`` draws from those too.

Every episode is seeded like ``NetHackBatchEnv``'s (core and display seeds from ``(seed, game,
episode)``, the moon phase fixed rather than read off the calendar), so a position is a portable
``MiniHackStartState``: the seeds plus the keys that led there. FAR episodes replay one (NLE has no
save), and the replay must end in the FAR room.

Keys (batch ``[N]``): ``tty_chars``, ``tty_colors``, ``tty_cursor``, ``prev_action`` (as NetHack);
``phase`` (0 CLOSE, 1 FAR: the hero stands in the FAR room); per-episode running values
``episode_reached_far`` (the hero has stood in the FAR room; FAR starts begin there) and
``episode_success`` (reached the staircase); ``episode_end``; ``success`` beside ``done``.

Reward: training envs (``training_reward=True``) give MiniHack's own reward (+1 at the staircase,
its −0.01 penalty for a step on which the game clock stands still) plus ``far_bonus`` the first
time an episode that began in CLOSE enters the FAR room; evaluation envs give 1 on success and 0
otherwise, so an evaluation's return is its success rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from nle import nethack
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from lit_rl.envs.minihack_level import DES_FILE, MOVE_ACTIONS, in_far_room, map_position, path_to_far
from lit_rl.envs.nethack import NUM_ACTIONS, TERMINAL_SHAPE, episode_seeds

ENV_ID = "LitRL-MiniHack-TwoPhase-v0"
START_STATE_FORMAT = "minihack_prefix"
#: what ``evaluate_episodes`` reports per episode: metric name -> ``next`` key (final value)
EPISODE_METRICS = {"reached_far": "episode_reached_far"}
_OBSERVATION_KEYS = ("tty_chars", "tty_colors", "tty_cursor", "blstats")
#: NLE's ``NetHackStaircase.StepStatus.TASK_SUCCESSFUL`` (MiniHack's goal reached)
_TASK_SUCCESSFUL = 2


def _minihack_class():
    """MiniHack's navigation env on this level, its step limit left to the batch env. Imported
    here: ``minihack`` registers its own envs and patches NLE's data on import."""
    from minihack.navigation import MiniHackNavigation

    class TwoPhaseLevel(MiniHackNavigation):
        def __init__(self, **kwargs):
            kwargs.setdefault("des_file", DES_FILE)
            kwargs.setdefault("max_episode_steps", 1_000_000)  # NLE's own cap; ours is below
            super().__init__(**kwargs)

    return TwoPhaseLevel


def register() -> None:
    """Registers ``ENV_ID`` with Gymnasium (once)."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=_minihack_class())


@dataclasses.dataclass
class MiniHackStartState:
    """A position of the level that NLE can rebuild: seed a game, press ``actions`` (indices of
    ``nle.nethack.ACTIONS``), and the hero stands where it was recorded (``phase``)."""

    core_seed: int
    disp_seed: int
    actions: list[int]
    phase: str = "far"


def save_start_states(path: str | os.PathLike, states: Sequence[MiniHackStartState]) -> None:
    payload = {"format": START_STATE_FORMAT, "start_states": [dataclasses.asdict(s) for s in states]}
    Path(path).write_text(json.dumps(payload))


def load_start_states(path: str | os.PathLike) -> list[MiniHackStartState]:
    """Reads ``save_start_states``' file; a damaged or foreign file raises one ValueError."""
    try:
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != START_STATE_FORMAT:
            raise ValueError(f'no "format": "{START_STATE_FORMAT}" mark')
        states = [
            MiniHackStartState(int(s["core_seed"]), int(s["disp_seed"]), [int(a) for a in s["actions"]],
                               str(s.get("phase", "far")))
            for s in payload["start_states"]
        ]  # fmt: skip
        if not states or any(not 0 <= a < NUM_ACTIONS for s in states for a in s.actions):
            raise ValueError("no start states, or an action index outside NLE's key set")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"MiniHack start-state file {path} is unusable ({err}): write it again with "
            "python -m lit_rl.envs.minihack --out <file>"
        ) from None
    return states


def make_far_start_states(count: int, seed: int = 0) -> list[MiniHackStartState]:
    """``count`` FAR hand-overs: new games seeded from ``(seed, 0, k)``, walked by the scripted
    shortest path from each game's random start square into the FAR room, each replay-checked."""
    env = MiniHackBatchEnv(1, seed=seed)
    states = []
    try:
        for k in range(count):
            core, disp = episode_seeds(seed, 0, k)
            game = env.games[0]
            game.seed(core, disp, False)
            obs, _ = game.reset()
            keys = path_to_far(map_position(*obs["blstats"][:2]))
            states.append(MiniHackStartState(core, disp, keys))
        env.start_states = states
        env.check_start_states()
    finally:
        env.close()
    return states


class MiniHackBatchEnv(EnvBase):
    """``num_games`` seeded games of the two-phase level stepped together; batch ``[num_games]``.

    Args:
        num_games: games per step call.
        seed: base seed of every game's episode seeds.
        max_episode_steps: truncate episodes after this many agent steps.
        start_states: FAR hand-overs replayed at every reset (used in order, cycling, from an
            offset of ``seed``); ``None``: new games (CLOSE).
        training_reward: MiniHack's reward plus ``far_bonus`` (training); otherwise 1 on success.
        far_bonus: reward for first entering the FAR room in an episode that began in CLOSE.
        character: NLE character string.
    """

    episode_metrics = EPISODE_METRICS

    def __init__(
        self,
        num_games: int = 16,
        *,
        seed: int | None = None,
        max_episode_steps: int = 100,
        start_states: Sequence[MiniHackStartState] | None = None,
        training_reward: bool = False,
        far_bonus: float = 0.5,
        character: str = "mon-hum-neu-mal",
        device: str | torch.device = "cpu",
    ):
        if num_games < 1:
            raise ValueError(f"num_games must be >= 1, got {num_games}")
        if start_states is not None and len(start_states) == 0:
            raise ValueError("start_states is empty: pass None for new games")
        super().__init__(batch_size=torch.Size([num_games]), device=device)
        register()
        self.num_games, self.max_episode_steps = num_games, max_episode_steps
        self.start_states = list(start_states) if start_states is not None else None
        self.training_reward, self.far_bonus = training_reward, far_bonus
        self.games = [
            gym.make(ENV_ID, observation_keys=_OBSERVATION_KEYS, actions=nethack.ACTIONS, character=character,
                     allow_all_yn_questions=True, fix_moon_phase=True).unwrapped
            for _ in range(num_games)
        ]  # fmt: skip
        rows, cols = TERMINAL_SHAPE
        self._chars = np.zeros((num_games, rows, cols), np.uint8)
        self._colors = np.zeros((num_games, rows, cols), np.int8)
        self._cursor = np.zeros((num_games, 2), np.uint8)
        self._phase = np.zeros(num_games, np.int64)
        self._began_far = np.zeros(num_games, bool)
        self._reached_far = np.zeros(num_games, bool)
        self._success = np.zeros(num_games, bool)
        self._steps = np.zeros(num_games, np.int64)
        self._episodes = np.zeros(num_games, np.int64)
        self._needs_reset = np.ones(num_games, bool)
        self._make_specs(num_games)
        self._set_seed(seed)

    def _make_specs(self, n: int) -> None:
        rows, cols = TERMINAL_SHAPE
        dev = self.device
        flags = {k: Binary(shape=(n,), dtype=torch.bool, device=dev)
                 for k in ("episode_reached_far", "episode_success", "episode_end")}  # fmt: skip
        self.observation_spec = Composite(
            tty_chars=Bounded(0, 255, shape=(n, rows, cols), dtype=torch.uint8, device=dev),
            tty_colors=Bounded(0, 31, shape=(n, rows, cols), dtype=torch.int8, device=dev),
            tty_cursor=Bounded(0, 255, shape=(n, 2), dtype=torch.uint8, device=dev),
            prev_action=Categorical(NUM_ACTIONS, shape=(n,), dtype=torch.int64, device=dev),
            phase=Unbounded(shape=(n,), dtype=torch.int64, device=dev),
            **flags,
            shape=(n,),
        )
        self.action_spec = Categorical(NUM_ACTIONS, shape=(n,), dtype=torch.int64, device=dev)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=dev)
        self.full_done_spec = Composite(
            {key: Binary(shape=(n, 1), dtype=torch.bool, device=dev)
             for key in ("done", "terminated", "truncated", "success")},
            shape=(n,),
        )  # fmt: skip

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """A uniformly random action of the task's set (MiniHack's 8 moves), not of all NLE keys."""
        choice = torch.randint(len(MOVE_ACTIONS), (self.num_games,), device=self.device)
        action = torch.tensor(MOVE_ACTIONS, device=self.device)[choice]
        if tensordict is None:
            tensordict = TensorDict(batch_size=self.batch_size, device=self.device)
        tensordict.set("action", action)
        return tensordict

    # -- TorchRL hooks -------------------------------------------------------------------------
    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        self._seed = int(seed) % 2**64
        self._episodes[:] = 0
        self._next_start = self._seed % len(self.start_states) if self.start_states else 0

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        games = range(self.num_games) if mask is None else np.flatnonzero(mask.reshape(-1).cpu().numpy())
        for i in games:
            self._reset_game(int(i))
        out = self._observe(np.zeros(self.num_games, bool))
        out.set("prev_action", torch.zeros(self.num_games, dtype=torch.int64, device=self.device))
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._needs_reset.any():
            raise RuntimeError(f"games {np.flatnonzero(self._needs_reset).tolist()} need a reset first")
        action = tensordict.get("action").reshape(-1)
        reward = np.zeros(self.num_games, np.float32)
        terminated = np.zeros(self.num_games, bool)
        for i, key in enumerate(action.cpu().tolist()):
            obs, r, term, _, info = self.games[i].step(int(key))
            entered = self._write(i, obs) and not self._reached_far[i]
            self._reached_far[i] |= bool(self._phase[i])
            self._success[i] = term and info["end_status"] == _TASK_SUCCESSFUL
            terminated[i] = term
            if self.training_reward:
                reward[i] = r + (self.far_bonus if entered and not self._began_far[i] else 0.0)
            else:
                reward[i] = float(self._success[i])
        self._steps += 1
        truncated = (self._steps >= self.max_episode_steps) & ~terminated
        ended = terminated | truncated
        self._needs_reset |= ended
        out = self._observe(ended)
        out.set("prev_action", action.clone())
        out.set("reward", torch.from_numpy(reward).to(self.device).unsqueeze(-1))
        for key, value in (("terminated", terminated), ("truncated", truncated), ("done", ended),
                           ("success", self._success.copy())):  # fmt: skip
            out.set(key, torch.from_numpy(value).to(self.device).unsqueeze(-1))
        return out

    def close(self, *, raise_if_closed: bool = True) -> None:
        for game in self.games:
            game.close()
        self.games = []
        super().close(raise_if_closed=raise_if_closed)

    # -- game mechanics ------------------------------------------------------------------------
    def _write(self, i: int, obs: dict) -> bool:
        """Copies game ``i``'s observation into the batch; returns whether the hero is in FAR."""
        self._chars[i], self._colors[i], self._cursor[i] = (
            obs["tty_chars"],
            obs["tty_colors"],
            obs["tty_cursor"],
        )
        self._phase[i] = int(in_far_room(*map_position(*obs["blstats"][:2])))
        return bool(self._phase[i])

    def _reset_game(self, i: int) -> None:
        game = self.games[i]
        if self.start_states is None:
            state = None
            core, disp = episode_seeds(self._seed, i, int(self._episodes[i]))
        else:
            state = self.start_states[self._next_start % len(self.start_states)]
            self._next_start += 1
            core, disp = state.core_seed, state.disp_seed
        self._episodes[i] += 1
        game.seed(core, disp, False)
        obs, _ = game.reset()
        for step, key in enumerate(state.actions if state is not None else ()):
            obs, _, term, _, _ = game.step(int(key))
            if term:
                raise RuntimeError(
                    f"MiniHack start state (seeds {core}, {disp}) ended at replayed key {step}"
                )
        in_far = self._write(i, obs)
        if state is not None and in_far != (state.phase == "far"):
            where = map_position(*obs["blstats"][:2])
            raise RuntimeError(
                f"MiniHack start state (seeds {core}, {disp}) replayed to map square {where}, not into "
                "its phase: it was recorded on another level or MiniHack/NLE version; write it again"
            )
        self._began_far[i] = self._reached_far[i] = in_far
        self._success[i] = False
        self._steps[i] = 0
        self._needs_reset[i] = False

    def check_start_states(self) -> None:
        """Replays every start state once in game 0 (raises if one does not reach its phase)."""
        for _ in self.start_states or ():
            self._reset_game(0)

    def _observe(self, ended: np.ndarray) -> TensorDict:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array.copy()).to(self.device)

        return TensorDict(
            tty_chars=tensor(self._chars),
            tty_colors=tensor(self._colors),
            tty_cursor=tensor(self._cursor),
            phase=tensor(self._phase),
            episode_reached_far=tensor(self._reached_far),
            episode_success=tensor(self._success),
            episode_end=tensor(ended),
            batch_size=self.batch_size,
            device=self.device,
        )


def main(argv: list[str] | None = None) -> None:
    """Writes FAR start states: ``python -m lit_rl.envs.minihack --out start_states_far.json``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_start_states(args.out, make_far_start_states(args.count, args.seed))
    print(f"{args.count} FAR start states (replay-checked) -> {args.out}")


if __name__ == "__main__":
    main()
