"""The two-phase MiniHack level as a scenario (docs/minihack.md): CLOSE = a new game in the start
room, FAR = a hand-over in the FAR room, NetHack's tty observations read by ScaledNet.

Everything but the environment is the NetHack scenario's: the recurrent ScaledNet actor-critic
(LSTM state carried in the TensorDict), KS's teacher running beside the student with its own LSTM
state, BC and EWC reading π*'s own FAR rollouts (this scenario has no recorded dataset). The one
change to the network: its 121 logits over NLE's keys are masked to MiniHack's navigation set (the
8 compass moves), as MiniHack's navigation tasks restrict the action space.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs import Compose, EnvBase, InitTracker, TransformedEnv
from torchrl.modules import ProbabilisticActor

from lit_rl.envs.minihack import (
    MiniHackBatchEnv,
    MiniHackStartState,
    load_start_states,
    make_far_start_states,
)
from lit_rl.envs.minihack_level import MOVE_ACTIONS
from lit_rl.envs.nethack import NUM_ACTIONS
from lit_rl.models.nethack_policy import (
    TEACHER_STATE_KEYS,
    RecurrentLogits,
    make_actor_critic,
    recurrent_primer,
)
from lit_rl.models.scaled_net import SIZES, ScaledNet, describe_scaled_net
from lit_rl.scenarios.base import Policy, Scenario

#: logit of the keys outside the task's action set: probability exactly 0 in float32, and finite,
#: so KL and entropy terms over all 121 logits stay finite (0 · finite = 0)
MASKED_LOGIT = -1.0e4


class MaskedPolicyHead(nn.Linear):
    """ScaledNet's policy layer with the logits of keys outside ``allowed`` set to ``MASKED_LOGIT``.

    A subclass of ``nn.Linear`` with the same parameters, so the state-dict names are ScaledNet's
    own and the mask (a buffer, not saved) is the scenario's to define."""

    def __init__(self, in_features: int, allowed: tuple[int, ...]):
        super().__init__(in_features, NUM_ACTIONS)
        mask = torch.full((NUM_ACTIONS,), MASKED_LOGIT)
        mask[list(allowed)] = 0.0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask < 0, self.mask, super().forward(x))


class MiniHack(Scenario):
    """The two-phase MiniHack level with a recurrent ScaledNet actor-critic.

    Args:
        size: ScaledNet width preset (``tiny``, ``small``, ``paper``).
        start_states: FAR hand-over file (``python -m lit_rl.envs.minihack --out …``); ``None``
            walks ``far_count`` of them at start-up (the same ones every time for one
            ``far_seed``: the scripted walker is deterministic).
        far_count, far_seed: how many hand-overs to walk, and their games' seed.
        max_episode_steps: agent steps per episode (train and evaluation).
        far_bonus: training reward for first entering the FAR room from a CLOSE start.
        freeze_encoders: keep ScaledNet's encoders fixed (the NetHack preset's fine-tuning does);
            ``False`` here: π* learnt them by RL on FAR views only.
    """

    name = "minihack"
    recurrent = True

    def __init__(
        self,
        size: str = "tiny",
        start_states: str | None = None,
        far_count: int = 32,
        far_seed: int = 0,
        max_episode_steps: int = 100,
        far_bonus: float = 0.5,
        freeze_encoders: bool = False,
    ):
        if size not in SIZES:
            raise ValueError(f"unknown ScaledNet size {size!r}: choose one of {sorted(SIZES)}")
        if far_count < 1:
            raise ValueError(f"far_count must be >= 1, got {far_count}")
        self.size, self.start_states_path = size, start_states
        self.far_count, self.far_seed = far_count, far_seed
        self.max_episode_steps, self.far_bonus = max_episode_steps, far_bonus
        self.freeze_encoders = freeze_encoders
        self._far_states: list[MiniHackStartState] | None = None

    def far_start_states(self) -> list[MiniHackStartState]:
        """The FAR hand-overs, read (or walked) once."""
        if self._far_states is None:
            if self.start_states_path is not None:
                self._far_states = load_start_states(self.start_states_path)
            else:
                self._far_states = make_far_start_states(self.far_count, self.far_seed)
        return self._far_states

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        self.check_start(start)
        env = MiniHackBatchEnv(
            num_envs,
            seed=seed,
            max_episode_steps=self.max_episode_steps,
            start_states=None if start == "close" else self.far_start_states(),
            training_reward=training,
            far_bonus=self.far_bonus,
        )
        hidden = SIZES[self.size].hidden
        return TransformedEnv(env, Compose(InitTracker(), recurrent_primer(num_envs, hidden)))

    def make_policy(self) -> Policy:
        net = ScaledNet(self.size)
        head = MaskedPolicyHead(net.policy.in_features, MOVE_ACTIONS)
        head.load_state_dict(net.policy.state_dict())
        net.policy = head
        actor, critic = make_actor_critic(net)
        fixed = net.encoder_modules() if self.freeze_encoders else []
        return Policy(actor=actor, critic=critic, value_heads=[net.value], fixed=fixed)

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Share of training frames in each phase (``close``, ``far``: the hero in the FAR room)
        and, over the episodes that ended in this batch, how many there were, how many reached the
        FAR room and how many the staircase (counts, so a report divides sums over a window)."""
        phase = batch["phase"].reshape(-1)
        shares = {"close": (phase == 0).float().mean().item(), "far": (phase == 1).float().mean().item()}
        ended = batch["next", "episode_end"].reshape(-1)
        shares["episodes"] = float(ended.sum().item())
        shares["episodes_reached_far"] = float(batch["next", "episode_reached_far"].reshape(-1)[ended].sum())
        shares["episodes_success"] = float(batch["next", "episode_success"].reshape(-1)[ended].sum())
        return shares

    def teacher_probe(self, teacher: ProbabilisticActor) -> RecurrentLogits:
        """π*'s logits from its own LSTM state (``teacher_state_*``), as the NetHack scenario."""
        return teacher.module[0].with_keys(TEACHER_STATE_KEYS, "teacher_logits")

    def add_teacher_state(self, env: TransformedEnv, num_envs: int) -> TransformedEnv:
        env.append_transform(recurrent_primer(num_envs, SIZES[self.size].hidden, TEACHER_STATE_KEYS))
        return env

    def describe(self) -> dict:
        return {"scenario": self.name, **describe_scaled_net(self.size), "actions": "minihack-moves"}
