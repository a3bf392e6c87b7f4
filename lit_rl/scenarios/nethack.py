"""NetHack as a scenario (paper section 3): CLOSE = a new game, FAR = hand-over at Dlvl >= N.

FAR episodes replay the expert's recorded start states (``start_states_dlvl<N>.json`` written by
``lit_rl.data.record_nethack --far-depths``), so the agent plays on from the depth the expert
reached; an episode's return is the score gained after the hand-over. Training envs clip the reward
to ``±train_clip_reward`` (paper: 10); evaluation envs are unclipped, so reported returns are
in-game score.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tensordict import TensorDictBase
from torchrl.envs import Compose, EnvBase, InitTracker, TransformedEnv
from torchrl.modules import ProbabilisticActor

from lit_rl.datasets.nld import NLDSequences, policy_chunks
from lit_rl.envs.nethack import NetHackBatchEnv, StartState, load_start_states
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

    ``lit_rl.data.record_nethack`` writes raw-key prefixes (every key NetHack received, the space /
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


class NetHack(Scenario):
    """Human Monk NetHack with a recurrent ScaledNet actor-critic.

    Args:
        size: ScaledNet width preset (``tiny``, ``small``, ``paper``).
        data_dir: dataset folder holding ``start_states_dlvl<far_dlvl>.json``.
        far_dlvl: FAR episodes start where the expert first reached this Dlvl (paper: 4).
        start_states: explicit start-state file (overrides ``data_dir`` / ``far_dlvl``).
        max_episode_steps: agent steps per episode before truncation (train and eval).
        train_clip_reward: reward clip of training envs (``None``: unclipped).
        freeze_encoders: keep ScaledNet's encoders (embeddings, line/map/crop CNNs, FC) fixed, as
            the paper's fine-tuning did; the LSTM and heads train.
        far_visit_dlvl: frames at Dlvl >= this count as FAR visits (default ``far_dlvl``).
        dataset_name: the recordings in ``data_dir/index.db`` that BC replay and EWC read.
    """

    name = "nethack"
    recurrent = True

    def __init__(
        self,
        size: str = "tiny",
        data_dir: str = "data/nethack",
        far_dlvl: int = 2,
        start_states: str | None = None,
        max_episode_steps: int = 1000,
        train_clip_reward: float | None = 10.0,
        freeze_encoders: bool = True,
        far_visit_dlvl: int | None = None,
        dataset_name: str = "nethack-expert",
    ):
        if size not in SIZES:
            raise ValueError(f"unknown ScaledNet size {size!r}: choose one of {sorted(SIZES)}")
        if far_dlvl < 2:
            raise ValueError(f"far_dlvl must be >= 2 (Dlvl 1 is CLOSE), got {far_dlvl}")
        self.size, self.data_dir, self.far_dlvl = size, data_dir, far_dlvl
        self.start_states_path = start_states or str(Path(data_dir) / f"start_states_dlvl{far_dlvl}.json")
        self.max_episode_steps = max_episode_steps
        self.train_clip_reward = train_clip_reward
        self.freeze_encoders = freeze_encoders
        self.far_visit_dlvl = far_visit_dlvl or far_dlvl
        self.dataset_name = dataset_name
        self._start_states: list[StartState] | None = None

    def start_states(self) -> list[StartState]:
        if self._start_states is None:
            self._start_states = read_start_states(self.start_states_path)
        return self._start_states

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        """Batched games starting in ``start``; training environments clip the reward to ±10."""
        self.check_start(start)
        env = NetHackBatchEnv(
            num_envs,
            seed=seed,
            max_episode_steps=self.max_episode_steps,
            clip_reward=self.train_clip_reward if training else None,
            start_states=self.start_states() if start == "far" else None,
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
        """Share of frames at Dlvl 1 (close), at each Dlvl in between, and at Dlvl >= N (far)."""
        dlvl = batch["dlvl"].reshape(-1)
        shares = {"close": (dlvl <= 1).float().mean().item()}
        for level in range(2, self.far_visit_dlvl):
            shares[f"dlvl{level}"] = (dlvl == level).float().mean().item()
        shares["far"] = (dlvl >= self.far_visit_dlvl).float().mean().item()
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
        """The recorded games of ``dataset_name`` in ``data_dir``'s index (built by pre-training,
        ``make nethack-pretrain``), streamed from disk; ``None`` when there is no index."""
        index = Path(self.data_dir) / "index.db"
        if not index.is_file():
            return None
        stream = NLDSequences(index, self.dataset_name, batch_size=rows, seq_length=seq_length,
                              loop_forever=True, rank=rank, world_size=world_size, seed=seed)  # fmt: skip
        return policy_chunks(iter(stream))

    def describe(self) -> dict:
        # the computation version makes exports of an older ScaledNet computation fail in one line
        return {"scenario": self.name, **describe_scaled_net(self.size)}
