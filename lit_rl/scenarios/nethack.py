"""NetHack as a scenario (paper section 3): CLOSE = a new game, FAR = hand-overs deeper down.

``far`` episodes replay the expert's recorded start states at Dlvl >= ``far_dlvl``
(``start_states_dlvl<N>.json`` written by ``lit_rl.recording.nethack_games --far-depths``), so the
agent plays on from the depth the expert reached; an episode's return is the score gained after the
hand-over. ``far_levels`` adds more hand-overs as subspaces of their own, as the paper evaluates
Dlvl 4, Dlvl 8 and Sokoban: ``dlvl<k>`` (``start_states_dlvl<k>.json``) and ``sokoban``
(``start_states_sokoban.json``, Sokoban's first level, where evaluation also reports
``pits_filled``). Training envs clip the reward to ``±train_clip_reward`` (paper: 10); evaluation
envs are unclipped, so reported returns are in-game score.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt
from tensordict import TensorDictBase
from torchrl.envs import Compose, EnvBase, InitTracker, TransformedEnv
from torchrl.modules import ProbabilisticActor

from lit_rl.datasets.nld import NLDSequences, draw_games, policy_chunks, select_gameids
from lit_rl.envs.nethack import SOKOBAN_DNUM, NetHackBatchEnv, StartState, load_start_states
from lit_rl.models.nethack_policy import (
    TEACHER_STATE_KEYS,
    RecurrentLogits,
    make_actor_critic,
    recurrent_primer,
)
from lit_rl.models.scaled_net import SIZES, ScaledNet, describe_scaled_net
from lit_rl.scenarios.base import Policy, Scenario


def read_start_states(path: str | Path) -> list[StartState]:
    """Start states from a recorder file, loaded as saved: ``NetHackBatchEnv`` replays them verbatim.

    ``lit_rl.recording.nethack_games`` writes raw-key prefixes (every key NetHack received, the space /
    ESC that NLE's gym env pressed by itself included) under a ``"format": "raw_keys"`` mark, each
    checked by a batch-env replay when recorded. Older files (a plain list of the expert's gym-env
    actions) are not converted: loading one raises a one-line ValueError asking to re-record it
    with ``make data ENV=nethack``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FAR start states {path} not found: run `make data ENV=nethack` "
            "(it records start_states_dlvl<k>.json) or set scenario far_dlvl to a recorded depth"
        )
    states = load_start_states(path)
    if not states:
        raise ValueError(f"start-state file {path} holds no start states; record more games")
    return states


SOKOBAN = "sokoban"
#: Dlvls whose visitation is logged as ``dlvl>=k`` (paper: share of episodes reaching Dlvl >= 2..5)
VISIT_DEPTHS = (2, 3, 4, 5)


def far_subspace_name(level: int | str) -> str:
    """``8`` -> ``dlvl8``, ``"sokoban"`` -> ``sokoban``; anything else stops with one line."""
    text = str(level).strip().lower()
    if text == SOKOBAN:
        return SOKOBAN
    depth = text.removeprefix("dlvl")
    if not depth.isdigit() or int(depth) < 2:
        raise ValueError(f"far_levels entry {level!r}: give a Dlvl >= 2 (e.g. 8) or 'sokoban'")
    return f"dlvl{int(depth)}"


class NetHack(Scenario):
    """Human Monk NetHack with a recurrent ScaledNet actor-critic.

    Subspaces (``self.subspaces``, the one list evaluation iterates and ``train_start`` is checked
    against): ``close``, ``far`` and one per ``far_levels`` entry, in that order. ``far`` keeps its
    name whatever its depth, because runs, summaries and reports compare ``far`` across presets.

    Args:
        size: ScaledNet width preset (``tiny``, ``small``, ``paper``).
        data_dir: dataset folder holding the start-state files.
        far_dlvl: ``far`` episodes start where the expert first reached this Dlvl (paper: 4).
        far_levels: further hand-over subspaces: Dlvls (``8`` -> subspace ``dlvl8``) and
            ``sokoban`` (Sokoban's first level); each reads ``data_dir/start_states_<name>.json``.
        start_states: explicit start-state file of ``far`` (overrides ``data_dir`` / ``far_dlvl``).
        start_state_files: explicit files of ``far_levels`` subspaces, by subspace name.
        max_episode_steps: agent steps per episode before truncation (train and eval).
        train_clip_reward: reward clip of training envs (``None``: unclipped).
        freeze_encoders: keep ScaledNet's encoders (embeddings, line/map/crop CNNs, FC) fixed, as
            the paper's fine-tuning did; the LSTM and heads train.
        far_visit_dlvl: frames at Dlvl >= this count as FAR visits (default ``far_dlvl``).
        dataset_name: the recordings in the dataset index that BC pre-training, BC replay and
            EWC read.
        dataset_index: that index (default ``data_dir/index.db``, built by BC pre-training).
        role, race, align: the character the dataset is filtered to (SQL on the index; the paper's
            Human Monk: ``mon``, ``hum``, ``neu``; ``null`` keeps every value).
        dataset_games: how many of the matching games to use, drawn at random with
            ``dataset_seed`` (the paper: 8000 Human Monk games of NLD-AA); ``null`` uses all. The
            one selection (``dataset_gameids``) feeds BC pre-training and BC/EWC replay alike.
    """

    name = "nethack"
    recurrent = True

    def __init__(
        self,
        size: str = "tiny",
        data_dir: str = "data/nethack",
        far_dlvl: int = 2,
        far_levels: Sequence[int | str] = (),
        start_states: str | None = None,
        start_state_files: dict[str, str] | None = None,
        max_episode_steps: int = 1000,
        train_clip_reward: float | None = 10.0,
        freeze_encoders: bool = True,
        far_visit_dlvl: int | None = None,
        dataset_name: str = "nethack-expert",
        dataset_index: str | None = None,
        role: str | None = "mon",
        race: str | None = "hum",
        align: str | None = "neu",
        dataset_games: PositiveInt | None = None,
        dataset_seed: int = 0,
    ):
        if size not in SIZES:
            raise ValueError(f"unknown ScaledNet size {size!r}: choose one of {sorted(SIZES)}")
        if far_dlvl < 2:
            raise ValueError(f"far_dlvl must be >= 2 (Dlvl 1 is CLOSE), got {far_dlvl}")
        self.size, self.data_dir, self.far_dlvl = size, data_dir, far_dlvl
        extra = [far_subspace_name(level) for level in far_levels]
        if len(set(extra)) != len(extra) or f"dlvl{far_dlvl}" in extra:
            raise ValueError(f"far_levels {list(far_levels)} repeat a level (far is already Dlvl {far_dlvl})")
        self.subspaces = ("close", "far", *extra)
        files = dict(start_state_files or {})
        unknown = sorted(set(files) - set(extra))
        if unknown:
            raise ValueError(f"start_state_files names {unknown}, not among far_levels subspaces {extra}")
        self.start_state_files = {
            "far": start_states or str(Path(data_dir) / f"start_states_dlvl{far_dlvl}.json"),
            **{name: files.get(name, str(Path(data_dir) / f"start_states_{name}.json")) for name in extra},
        }
        self.start_states_path = self.start_state_files["far"]
        self.max_episode_steps = max_episode_steps
        self.train_clip_reward = train_clip_reward
        self.freeze_encoders = freeze_encoders
        self.far_visit_dlvl = far_visit_dlvl or far_dlvl
        self.dataset_name = dataset_name
        self.dataset_index = dataset_index or str(Path(data_dir) / "index.db")
        self.character = {"role": role, "race": race, "align": align}
        self.dataset_games, self.dataset_seed = dataset_games, dataset_seed
        self._start_states: dict[str, list[StartState]] = {}

    def start_states(self, subspace: str = "far") -> list[StartState]:
        """The hand-over start states of a FAR subspace, read once; Sokoban's must lie in Sokoban."""
        if subspace not in self._start_states:
            path = self.start_state_files[subspace]
            states = read_start_states(path)
            if subspace == SOKOBAN and any(s.dnum != SOKOBAN_DNUM for s in states):
                raise ValueError(
                    f"{path} holds start states outside Sokoban: record them with "
                    "`make data ENV=nethack GAMES=0 FAR_DEPTHS=sokoban`"
                )
            self._start_states[subspace] = states
        return self._start_states[subspace]

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        """Batched games starting in ``start``; training environments clip the reward to ±10."""
        self.check_start(start)
        env = NetHackBatchEnv(
            num_envs,
            seed=seed,
            max_episode_steps=self.max_episode_steps,
            clip_reward=self.train_clip_reward if training else None,
            start_states=None if start == "close" else self.start_states(start),
        )
        hidden = SIZES[self.size].hidden
        return TransformedEnv(env, Compose(InitTracker(), recurrent_primer(num_envs, hidden)))

    def make_network(self) -> ScaledNet:
        return ScaledNet(self.size)

    def make_policy(self) -> Policy:
        net = self.make_network()
        actor, critic = make_actor_critic(net)
        fixed = net.encoder_modules() if self.freeze_encoders else []
        # the actor module holds the whole ScaledNet; its value head is the critic's alone
        return Policy(actor=actor, critic=critic, value_heads=[net.value], fixed=fixed)

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Where the training frames and episodes went (logged as ``train/visit/<key>``).

        Frames: share at Dlvl 1 (``close``), at each Dlvl in between (``dlvl<k>``), at Dlvl >= N
        (``far``), at Dlvl >= k for k = 2..5 (``dlvl>=k``) and, with a Sokoban subspace, in
        Sokoban (``sokoban``). Episodes that ended in this batch (paper: the share of episodes
        reaching Dlvl >= 2/3/4/5 and, Figure 4, their deepest level against their length in
        turns): ``episodes`` (how many), ``episodes_dlvl>=k`` (how many reached Dlvl >= k),
        ``episodes_max_dlvl`` and ``episodes_turns`` (sums of their deepest Dlvl and their
        turns). Counts and sums, not shares, because a batch may end no episode: a report divides
        sums over a window (Σ episodes_dlvl>=k / Σ episodes), and the keys are the same in every
        batch, as data-parallel logging needs.
        """
        dlvl = batch["dlvl"].reshape(-1)
        shares = {"close": (dlvl <= 1).float().mean().item()}
        for level in range(2, self.far_visit_dlvl):
            shares[f"dlvl{level}"] = (dlvl == level).float().mean().item()
        shares["far"] = (dlvl >= self.far_visit_dlvl).float().mean().item()
        for level in VISIT_DEPTHS:
            shares[f"dlvl>={level}"] = (dlvl >= level).float().mean().item()
        if SOKOBAN in self.subspaces and "dnum" in batch.keys():
            shares[SOKOBAN] = (batch["dnum"].reshape(-1) == SOKOBAN_DNUM).float().mean().item()
        ends = ("next", "episode_end")
        if ends in batch.keys(include_nested=True):
            ended = batch[ends].reshape(-1)
            deepest = batch["next", "episode_depth"].reshape(-1)[ended]
            turns = batch["next", "episode_turns"].reshape(-1)[ended]
            shares["episodes"] = float(ended.sum().item())
            for level in VISIT_DEPTHS:
                shares[f"episodes_dlvl>={level}"] = float((deepest >= level).sum().item())
            shares["episodes_max_dlvl"] = float(deepest.sum().item())
            shares["episodes_turns"] = float(turns.to(torch.float64).sum().item())
        return shares

    def teacher_probe(self, teacher: ProbabilisticActor) -> RecurrentLogits:
        """π*'s logits from its own LSTM state (``teacher_state_*``), carried beside the student's."""
        return teacher.module[0].with_keys(TEACHER_STATE_KEYS, "teacher_logits")

    def add_teacher_state(self, env: TransformedEnv, num_envs: int) -> TransformedEnv:
        """Zero ``teacher_state_*`` at every reset, beside the student's state."""
        env.append_transform(recurrent_primer(num_envs, SIZES[self.size].hidden, TEACHER_STATE_KEYS))
        return env

    def pretraining_sequences(
        self, rows: int, seq_length: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[TensorDictBase] | None:
        """The selected recorded games (``dataset_gameids``: the games π* was cloned from) streamed
        from disk; ``None`` when there is no index (built by ``make nethack-pretrain``)."""
        if not Path(self.dataset_index).is_file():
            return None
        stream = NLDSequences(self.dataset_index, self.dataset_name, batch_size=rows, seq_length=seq_length,
                              gameids=self.dataset_gameids(), loop_forever=True, rank=rank,
                              world_size=world_size, seed=seed)  # fmt: skip
        return policy_chunks(iter(stream))

    def dataset_gameids(self) -> list[int]:
        """The one dataset selection: games of ``dataset_name`` with the configured character,
        ``dataset_games`` of them drawn with ``dataset_seed``."""
        matching = select_gameids(self.dataset_index, self.dataset_name, **self.character)
        return draw_games(matching, self.dataset_games, self.dataset_seed)

    def describe(self) -> dict:
        # the computation version makes exports of an older ScaledNet computation fail in one line
        return {"scenario": self.name, **describe_scaled_net(self.size)}
