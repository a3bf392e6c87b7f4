"""NetHack as a batched TorchRL environment: N seeded NLE games stepped per call (paper section 3).

Stock ``GymEnv`` costs ~27x the raw NLE step on this machine, so this env talks to NLE's low-level
``nle.nethack.Nethack`` directly: each game writes its observations into one row of batch numpy
arrays we own (``set_buffers``), a step is one C call per game plus a few vectorised numpy ops, and
the only per-step copies are the tensors handed to TorchRL (collectors keep references to them).

Settings follow NetHackChallenge (full 121-key action set, questions left to the agent during
play, the 10,000 step no-progress abort) except that every game is seeded: game ``i``'s ``k``-th
episode gets core and display seeds derived from ``(seed, i, k)`` with NetHack's reseeding off and
the moon phase fixed, so a run is reproducible and any game's position is a portable
``StartState`` (seeds plus the action prefix that reached it). Replaying that prefix is how FAR
starts work, since NLE has no save/restore.

Observation keys (batch ``[N]``): ``tty_chars`` uint8 [N,24,80], ``tty_colors`` int8 [N,24,80],
``tty_cursor`` uint8 [N,2], ``prev_action`` int64 [N] (0 after a reset), ``dlvl`` int64 [N] (the
current depth), ``dnum`` int64 [N] (the current dungeon branch, ``SOKOBAN_DNUM`` in Sokoban) and
per-episode statistics ``episode_score`` (score gained since the episode began, i.e. since the
hand-over for FAR starts), ``episode_depth`` (deepest Dlvl), ``episode_turns`` (in-game turn
counter), ``episode_xlvl`` (experience level), ``episode_pits_filled`` (Sokoban pits and holes the
agent filled with boulders since the episode began, counted from the game's messages, see
``count_pit_fills``), ``episode_end_type`` (NetHack's ``how_done`` code, ``TRUNCATED`` when we cut
the episode, -1 while running) and ``episode_end`` (bool, True only on the step that ended the
episode). The statistics are running values every step and final where ``episode_end`` is set;
``EPISODE_METRICS`` names the ones an evaluator reports per episode. Death causes are strings, so
they stay outside the TensorDict: ``last_death_causes()`` reads them from each game's xlogfile.
"""

from __future__ import annotations

import array
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from nle import nethack
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

NUM_ACTIONS = len(nethack.ACTIONS)
TERMINAL_SHAPE = nethack.OBSERVATION_DESC["tty_chars"]["shape"]
# ``episode_end_type`` values beside NLE's how_done codes: an episode we cut, one still running.
TRUNCATED = -2
RUNNING = -1

_KEY_SPACE = ord(" ")
_KEY_ESC = 27
_MAX_SETUP_KEYS = 1000
# Start-state files whose actions are raw keys (see ``save_start_states``).
START_STATE_FORMAT = "raw_keys"
# NetHack numbers its dungeons in the order dat/dungeon.def defines them: the Dungeons of Doom,
# Gehennom, the Gnomish Mines, the Quest, then Sokoban.
SOKOBAN_DNUM = 4
# Per-episode statistics an evaluator reports (metric name -> the ``next`` key whose value at the
# episode's end is the metric): running values, so the last one is the episode's.
EPISODE_METRICS = {
    "pits_filled": "episode_pits_filled",
    "max_dlvl": "episode_depth",
    "turns": "episode_turns",
}

# What NetHack 3.6 prints when a boulder fills a pit or plugs a hole (paper section 3: Sokoban's
# metric). do.c flooreffects(): "The boulder fills a pit." / "plugs a hole." / "[triggers and]
# plugs a trap door.", unseen "You hear a boulder fall.", blind in the pit "You hear a CRASH!
# beneath you."; hack.c moverock() for holes and trap doors: "The boulder falls into and plugs a
# hole in the floor!", "The boulder triggers and plugs a trap door in the floor!", blind
# "Kerplunk!  You no longer feel the boulder.". "The boulder falls into the pit." (a monster in
# it) is not counted: flooreffects() prints "fills a pit" after it when the pit is filled.
_PIT_FILL = re.compile(
    r"boulder (?:triggers and )?(?:fills a pit|plugs a hole|plugs a trap door)"
    r"|boulders? (?:falls? into|triggers?) and plugs? an? (?:hole|trap door)"
    r"|You hear a boulder \w+\."
    r"|You hear a CRASH! beneath you"
    r"|Kerplunk!  You no longer feel"
)
_PIT_FILL_HINTS = (b"oulder", b"CRASH", b"Kerplunk")


def count_pit_fills(message: str) -> int:
    """Pits and holes filled by boulders according to one top line of NetHack messages (the
    line can hold several messages, each fill is counted)."""
    return len(_PIT_FILL.findall(message))


@dataclasses.dataclass
class StartState:
    """A NetHack position NLE can rebuild: seed a game, replay ``actions`` (indices into
    ``nle.nethack.ACTIONS``), and it stands where it was recorded, at depth ``dlvl``."""

    core_seed: int
    disp_seed: int
    actions: list[int]
    dlvl: int
    #: NetHack's dungeon number there (``SOKOBAN_DNUM`` for Sokoban); ``None``: not checked
    dnum: int | None = None


def save_start_states(path: str | os.PathLike, states: Sequence[StartState]) -> None:
    """Writes start states to a JSON file: ``StartState`` fields under the ``raw_keys`` format mark.

    The mark says the actions are every key NetHack received, which this env replays verbatim
    (as ``current_start_state`` logs them). The recorder's older, unmarked files held the expert's
    actions in NLE's gym env, which also pressed space / ESC by itself.
    """
    payload = {"format": START_STATE_FORMAT, "start_states": [dataclasses.asdict(s) for s in states]}
    Path(path).write_text(json.dumps(payload))


def load_start_states(path: str | os.PathLike) -> list[StartState]:
    """Reads a file written by ``save_start_states``; a damaged file raises one clear ValueError,
    and so does an unmarked (older) file, whose prefixes this env would not replay to their Dlvl."""
    try:
        payload = json.loads(Path(path).read_text())
        # ``{"version": 1}``: the same raw-key records, as ``save_start_states`` first wrote them
        marked = isinstance(payload, dict) and (
            payload.get("format") == START_STATE_FORMAT or payload.get("version") == 1
        )
        if marked:
            states = [
                StartState(
                    core_seed=int(entry["core_seed"]),
                    disp_seed=int(entry["disp_seed"]),
                    actions=[int(a) for a in entry["actions"]],
                    dlvl=int(entry["dlvl"]),
                    dnum=None if entry.get("dnum") is None else int(entry["dnum"]),
                )
                for entry in payload["start_states"]
            ]
            if any(not 0 <= a < NUM_ACTIONS for s in states for a in s.actions):
                raise ValueError(f"an action index outside [0, {NUM_ACTIONS})")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"start-state file {path} is corrupt ({type(err).__name__}: {err}); "
            "delete it and record the start states again"
        ) from None
    if not marked:
        raise ValueError(
            f'start-state file {path} has no "format": "{START_STATE_FORMAT}" mark (it predates '
            "raw-key prefixes): re-record it with `make data ENV=nethack` (GAMES=0: start states only)"
        )
    return states


def episode_seeds(seed: int, game: int, episode: int) -> tuple[int, int]:
    """(core, disp) NetHack seeds of one episode, independent across games and episodes."""
    core, disp = np.random.SeedSequence([seed, game, episode]).generate_state(2, np.uint64)
    return int(core) >> 1, int(disp) >> 1  # 63 bits: fits int64 tensors and every JSON reader


class NetHackBatchEnv(EnvBase):
    """``num_games`` seeded NetHack games stepped together; batch_size ``[num_games]``.

    Args:
        num_games: games per step call; more games amortise TorchRL's fixed per-call cost.
        character: NLE character string, the paper's Human Monk by default.
        seed: base seed of every game's episode seeds; ``None`` draws one from the OS.
        max_episode_steps: truncate episodes after this many agent steps (``None``: no limit).
        no_progress_timeout: truncate after this many steps without the turn counter moving,
            as NetHackChallenge does (``None``: off).
        clip_reward: clip the score-delta reward to ``±clip_reward`` (the paper trains with 10);
            ``None`` leaves it unclipped, as evaluation needs.
        start_states: if given, every reset replays the next one of these instead of starting
            a fresh game (the FAR starts of the paper's evaluation); they are used in order,
            cycling, from an offset of ``seed`` modulo their number.
    """

    #: what ``evaluate_episodes`` reports per episode: metric name -> ``next`` key (final value)
    episode_metrics = EPISODE_METRICS

    def __init__(
        self,
        num_games: int = 16,
        *,
        character: str = "mon-hum-neu-mal",
        seed: int | None = None,
        max_episode_steps: int | None = None,
        no_progress_timeout: int | None = 10_000,
        clip_reward: float | None = None,
        start_states: Sequence[StartState] | None = None,
        device: str | torch.device = "cpu",
    ):
        if num_games < 1:
            raise ValueError(f"num_games must be >= 1, got {num_games}")
        if start_states is not None and len(start_states) == 0:
            raise ValueError("start_states is empty: pass None for fresh games")
        super().__init__(batch_size=torch.Size([num_games]), device=device)
        self.num_games = num_games
        self.character = character
        self.max_episode_steps = max_episode_steps
        self.no_progress_timeout = no_progress_timeout
        self.clip_reward = clip_reward
        self.start_states = list(start_states) if start_states is not None else None
        self._keys = np.array([int(a) for a in nethack.ACTIONS], dtype=np.int64)

        n = num_games
        rows, cols = TERMINAL_SHAPE
        self._chars = np.zeros((n, rows, cols), np.uint8)
        self._colors = np.zeros((n, rows, cols), np.int8)
        self._cursor = np.zeros((n, 2), np.uint8)
        self._blstats = np.zeros((n,) + nethack.BLSTATS_SHAPE, np.int64)
        self._message = np.zeros((n,) + nethack.MESSAGE_SHAPE, np.uint8)
        self._program_state = np.zeros((n,) + nethack.PROGRAM_STATE_SHAPE, np.int32)
        self._internal = np.zeros((n,) + nethack.INTERNAL_SHAPE, np.int32)
        self._games = []
        for i in range(n):
            game = nethack.Nethack(
                observation_keys=(),
                playername="Agent-" + character,
                ttyrec=None,
                fix_moon_phase=True,  # otherwise luck and monsters depend on the calendar
            )
            # Row views of the batch arrays, so NLE writes each game's observation in place. The
            # public wrapper only fills buffers of its own; its (nle 1.3) _pynethack takes ours.
            game._pynethack.set_buffers(
                tty_chars=self._chars[i],
                tty_colors=self._colors[i],
                tty_cursor=self._cursor[i],
                blstats=self._blstats[i],
                message=self._message[i],
                program_state=self._program_state[i],
                internal=self._internal[i],
            )
            self._games.append(game)

        self._episodes = np.zeros(n, np.int64)  # per game; with _seed (set below) picks seeds
        self._seeds: list[tuple[int, int]] = [(0, 0)] * n
        # One byte per action: Challenge-length episodes run to 10^5 steps per game.
        self._action_log = [array.array("B") for _ in range(n)]
        self._needs_reset = np.ones(n, bool)
        self._steps = np.zeros(n, np.int64)
        self._stalled = np.zeros(n, np.int64)
        self._turn = np.zeros(n, np.int64)
        self._score = np.zeros(n, np.int64)
        self._start_score = np.zeros(n, np.int64)
        self._depth = np.zeros(n, np.int64)
        self._max_depth = np.zeros(n, np.int64)
        self._xlvl = np.zeros(n, np.int64)
        self._dnum = np.zeros(n, np.int64)
        self._pits_filled = np.zeros(n, np.int64)
        # (message, turn, y, x) of each game's last counted fill: a top line still on screen
        # (a --More-- waiting, a count being typed) is not a second fill
        self._last_fill: list[tuple | None] = [None] * n
        self._end_type = np.full(n, RUNNING, np.int64)
        self._death_causes: list[str | None] = [None] * n
        self._make_specs(n)
        self._set_seed(seed)

    def _make_specs(self, n: int) -> None:
        rows, cols = TERMINAL_SHAPE
        dev = self.device
        counters = ("dlvl", "dnum", "episode_score", "episode_depth", "episode_turns", "episode_xlvl",
                    "episode_pits_filled")  # fmt: skip
        stats = {
            key: Unbounded(shape=(n,), dtype=torch.int64, device=dev)
            for key in (*counters, "episode_end_type")
        }
        self.observation_spec = Composite(
            tty_chars=Bounded(0, 255, shape=(n, rows, cols), dtype=torch.uint8, device=dev),
            tty_colors=Bounded(0, 31, shape=(n, rows, cols), dtype=torch.int8, device=dev),
            tty_cursor=Bounded(0, 255, shape=(n, 2), dtype=torch.uint8, device=dev),
            prev_action=Categorical(NUM_ACTIONS, shape=(n,), dtype=torch.int64, device=dev),
            episode_end=Binary(shape=(n,), dtype=torch.bool, device=dev),
            **stats,
            shape=(n,),
        )
        self.action_spec = Categorical(NUM_ACTIONS, shape=(n,), dtype=torch.int64, device=dev)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=dev)
        self.full_done_spec = Composite(
            done=Binary(shape=(n, 1), dtype=torch.bool, device=dev),
            terminated=Binary(shape=(n, 1), dtype=torch.bool, device=dev),
            truncated=Binary(shape=(n, 1), dtype=torch.bool, device=dev),
            shape=(n,),
        )

    # -- TorchRL hooks -------------------------------------------------------------------------

    def _set_seed(self, seed: int | None) -> None:
        """Seeds take effect at each game's next reset; episode counters restart."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        self._seed = int(seed) % 2**64
        self._episodes[:] = 0
        # Workers seeded differently start their walk through the start states at different places.
        self._next_start = self._seed % len(self.start_states) if self.start_states else 0

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is None:
            games = range(self.num_games)
        else:
            games = np.flatnonzero(mask.reshape(-1).cpu().numpy()).tolist()
        for i in games:
            self._reset_game(i)
        out = self._observe(np.zeros(self.num_games, bool))
        out.set("prev_action", torch.zeros(self.num_games, dtype=torch.int64, device=self.device))
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._needs_reset.any():
            stale = np.flatnonzero(self._needs_reset).tolist()
            raise RuntimeError(f"games {stale} ended or were never reset; reset them first")
        action = tensordict.get("action").reshape(-1)
        actions = action.cpu().numpy()
        keys = self._keys[actions].tolist()
        terminated = np.zeros(self.num_games, bool)
        for i, key in enumerate(keys):
            terminated[i] = self._step_game(i, key)
        for i, a in enumerate(actions.tolist()):
            self._action_log[i].append(a)

        alive = ~terminated
        bl = self._blstats
        score = np.where(alive, bl[:, nethack.NLE_BL_SCORE], self._score)
        reward = (score - self._score).astype(np.float32)
        self._score = score
        self._depth = np.where(alive, bl[:, nethack.NLE_BL_DEPTH], self._depth)
        self._max_depth = np.maximum(self._max_depth, self._depth)
        self._xlvl = np.where(alive, bl[:, nethack.NLE_BL_XP], self._xlvl)
        turn = np.where(alive, bl[:, nethack.NLE_BL_TIME], self._turn)
        self._stalled = np.where(turn == self._turn, self._stalled + 1, 0)
        self._turn = turn
        self._dnum = np.where(alive, bl[:, nethack.NLE_BL_DNUM], self._dnum)
        self._count_pit_fills(alive)
        self._steps += 1

        truncated = np.zeros(self.num_games, bool)
        if self.max_episode_steps is not None:
            truncated |= self._steps >= self.max_episode_steps
        if self.no_progress_timeout is not None:
            truncated |= self._stalled >= self.no_progress_timeout
        truncated &= alive
        ended = terminated | truncated
        if ended.any():
            self._end_episodes(terminated, truncated)
        if self.clip_reward is not None:
            np.clip(reward, -self.clip_reward, self.clip_reward, out=reward)

        out = self._observe(ended)
        out.set("prev_action", action.clone())
        out.set("reward", torch.from_numpy(reward).to(self.device).unsqueeze(-1))
        out.set("terminated", torch.from_numpy(terminated).to(self.device).unsqueeze(-1))
        out.set("truncated", torch.from_numpy(truncated).to(self.device).unsqueeze(-1))
        out.set("done", torch.from_numpy(ended).to(self.device).unsqueeze(-1))
        return out

    def close(self, *, raise_if_closed: bool = True) -> None:
        for game in self._games:
            game.close()
        self._games = []
        super().close(raise_if_closed=raise_if_closed)

    # -- game mechanics ------------------------------------------------------------------------

    def _step_game(self, i: int, key: int) -> bool:
        """Sends one key to game ``i``, clicks through the end-of-game screens, returns done.

        Used for agent steps and for start-state replay alike, so a replay reproduces the keys.
        """
        game = self._games[i]._pynethack
        game.step(key)
        if self._program_state[i, 0]:  # game over: NLE's "known steps" up to the end
            internal = self._internal[i]
            for _ in range(_MAX_SETUP_KEYS):
                if game.done():
                    break
                if internal[3]:  # xwaitforspace (--More--)
                    game.step(_KEY_SPACE)
                elif internal[1] or internal[2]:  # a y/n question or a text prompt
                    game.step(_KEY_ESC)
                else:
                    break
        return game.done()

    def _count_pit_fills(self, alive: np.ndarray) -> None:
        """Adds the fills this step's top line reports to each live game's episode count; a line
        that stayed on screen with the hero in the same place and turn was counted already."""
        for i in np.flatnonzero(alive & (self._message[:, 0] != 0)).tolist():
            line = self._message[i].tobytes()
            if not any(hint in line for hint in _PIT_FILL_HINTS):
                continue
            bl = self._blstats[i]
            seen = (line, int(bl[nethack.NLE_BL_TIME]), int(bl[nethack.NLE_BL_Y]), int(bl[nethack.NLE_BL_X]))
            if seen != self._last_fill[i]:
                fills = count_pit_fills(line.rstrip(b"\0").decode("latin-1"))
                if fills:
                    self._pits_filled[i] += fills
                    self._last_fill[i] = seen

    def _dismiss_waits(self, i: int) -> None:
        """Answer a --More-- or a prompt left open by a truncated episode before NLE resets the
        game: resetting a game that waits for a key aborts the whole process."""
        game, internal = self._games[i]._pynethack, self._internal[i]
        for _ in range(_MAX_SETUP_KEYS):
            if game.done() or not (internal[3] or internal[1] or internal[2]):
                return
            game.step(_KEY_SPACE if internal[3] else _KEY_ESC)

    def _reset_game(self, i: int) -> None:
        """Starts game ``i``'s next episode: fresh seeded game or a replayed start state."""
        if self.start_states is None:
            state = None
            core, disp = episode_seeds(self._seed, i, int(self._episodes[i]))
        else:
            state = self.start_states[self._next_start % len(self.start_states)]
            self._next_start += 1
            core, disp = state.core_seed, state.disp_seed
        self._episodes[i] += 1
        game = self._games[i]
        self._dismiss_waits(i)
        game.set_initial_seeds(core, disp, False)
        game.reset()
        for _ in range(_MAX_SETUP_KEYS):  # NLE's own reset: press space up to the move loop
            if self._program_state[i, 3]:
                break
            game._pynethack.step(_KEY_SPACE)
        else:
            raise RuntimeError(f"game {i} did not reach the move loop after reset")
        if state is not None:
            keys = self._keys[np.asarray(state.actions, dtype=np.int64)].tolist()
            for step, key in enumerate(keys):
                if self._step_game(i, key):
                    raise RuntimeError(
                        f"start state (seeds {core}, {disp}) ended during replay at action "
                        f"{step}: it was recorded under other game settings or NLE version"
                    )
            depth = int(self._blstats[i, nethack.NLE_BL_DEPTH])
            dnum = int(self._blstats[i, nethack.NLE_BL_DNUM])
            if depth != state.dlvl or (state.dnum is not None and dnum != state.dnum):
                raise RuntimeError(
                    f"start state (seeds {core}, {disp}) replayed to Dlvl {depth} in dungeon "
                    f"{dnum}, recorded Dlvl {state.dlvl} in dungeon {state.dnum}: it was "
                    "recorded under other game settings or NLE version"
                )
        self._seeds[i] = (core, disp)
        self._action_log[i] = array.array("B", state.actions if state is not None else ())
        bl = self._blstats[i]
        self._needs_reset[i] = False
        self._steps[i] = 0
        self._stalled[i] = 0
        self._turn[i] = bl[nethack.NLE_BL_TIME]
        self._score[i] = self._start_score[i] = bl[nethack.NLE_BL_SCORE]
        self._depth[i] = self._max_depth[i] = bl[nethack.NLE_BL_DEPTH]
        self._xlvl[i] = bl[nethack.NLE_BL_XP]
        self._dnum[i] = bl[nethack.NLE_BL_DNUM]
        self._pits_filled[i] = 0
        self._last_fill[i] = None
        self._end_type[i] = RUNNING

    def _end_episodes(self, terminated: np.ndarray, truncated: np.ndarray) -> None:
        for i in np.flatnonzero(terminated).tolist():
            self._end_type[i] = int(self._games[i].how_done())
            self._death_causes[i] = self._xlog_death(i)
        for i in np.flatnonzero(truncated).tolist():
            self._end_type[i] = TRUNCATED
            self._death_causes[i] = "truncated"
        self._needs_reset |= terminated | truncated

    def _xlog_death(self, i: int) -> str | None:
        """The ``death=`` field of the last game NetHack logged in game ``i``'s xlogfile."""
        path = os.path.join(self._games[i]._vardir, "xlogfile")
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        for field in lines[-1].split("\t") if lines else ():
            if field.startswith("death="):
                return field[len("death=") :]
        return None

    def _observe(self, ended: np.ndarray) -> TensorDict:
        """Copies the batch buffers into fresh tensors: TorchRL keeps references to step outputs."""
        dev = self.device

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array.copy()).to(dev)

        return TensorDict(
            tty_chars=tensor(self._chars),
            tty_colors=tensor(self._colors),
            tty_cursor=tensor(self._cursor),
            dlvl=tensor(self._depth),
            dnum=tensor(self._dnum),
            episode_score=tensor(self._score - self._start_score),
            episode_depth=tensor(self._max_depth),
            episode_turns=tensor(self._turn),
            episode_xlvl=tensor(self._xlvl),
            episode_pits_filled=tensor(self._pits_filled),
            episode_end_type=tensor(self._end_type),
            episode_end=tensor(ended),
            batch_size=self.batch_size,
            device=dev,
        )

    # -- start states and diagnostics ----------------------------------------------------------

    def current_start_state(self, game: int) -> StartState:
        """The ``StartState`` that replays ``game`` to where it stands now (e.g. at Dlvl 4)."""
        core, disp = self._seeds[game]
        actions = list(self._action_log[game])
        return StartState(core, disp, actions, int(self._depth[game]), int(self._dnum[game]))

    def blstats(self) -> np.ndarray:
        """A copy of every game's bottom-line stats (NLE ``blstats``, [N, 27]), e.g. for a recorder
        to check that a replayed ``StartState`` stands exactly where it was recorded."""
        return self._blstats.copy()

    def last_death_causes(self) -> list[str | None]:
        """Per game, how its last finished episode ended, in NetHack's words ("killed by a
        jackal", "quit", ...; "truncated" when we cut it; None before any episode ended). Taken
        from the xlogfile each game writes, which is exact where parsing the tombstone is not."""
        return list(self._death_causes)
