"""AppleRetrieval (paper appendix A): a 1-D corridor that makes forgetting easy to see.

Phase 1 walks from x = 0 to the apple at x = M; phase 2 walks back to x = 0. Every step earns +1 in
the phase's direction and −1 otherwise; episodes stop when the agent is home in phase 2 or after 100
steps. The agent only observes o = −c (phase 1) or o = +c (phase 2), so a logistic policy σ(w·o + b)
leans on the shared bias b when c is small, and fitting phase 1 (CLOSE) rewrites phase 2 (FAR).
The corridor has walls: x stays in [0, M]; a step into a wall still costs −1.

Two front-ends share one dynamics function: a batched TorchRL environment (thousands of corridors
stepped at once in torch) for training, and a single-corridor gymnasium environment registered as
``lit_rl/AppleRetrieval-v0`` for users of the gymnasium API.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

EPISODE_CAP = 100
LEFT, RIGHT = 0, 1
PHASE_TO_APPLE, PHASE_HOME = 1, 2
START_POSITIONS = {"close": "phase 1 at x = 0", "far": "phase 2 at the apple (x = M)"}


def apple_step(x, phase, action, length: int):
    """One step of the paper's dynamics for arrays or tensors: returns (x, phase, reward, home)."""
    right = action == RIGHT
    wanted = (phase == PHASE_TO_APPLE) == right
    reward = wanted * 2.0 - 1.0
    x = (x + right * 2 - 1).clip(0, length)
    phase = phase + ((phase == PHASE_TO_APPLE) & (x == length))
    home = (phase == PHASE_HOME) & (x == 0)
    return x, phase, reward, home


class AppleRetrievalEnv(EnvBase):
    """Batched AppleRetrieval: ``num_envs`` corridors, one torch op per dynamics term per step.

    ``start`` picks the start states: ``close`` (phase 1 at x = 0, the fine-tuning task) or ``far``
    (phase 2 at the apple, where the pre-trained policy learned). ``state_features`` carries
    (o, x/M, t/100) for the critic, which the paper leaves unconstrained.
    """

    def __init__(
        self,
        num_envs: int = 64,
        length: int = 30,
        scale: float = 0.1,
        start: str = "close",
        device: str | torch.device = "cpu",
    ):
        if start not in START_POSITIONS:
            raise ValueError(f"unknown start {start!r}: choose one of {sorted(START_POSITIONS)}")
        if length < 1:
            raise ValueError(f"corridor length must be >= 1, got {length}")
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.length, self.scale, self.start = length, scale, start
        self._x = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._phase = torch.ones_like(self._x)
        self._t = torch.zeros_like(self._x)
        self._make_specs(num_envs)

    def _make_specs(self, n: int) -> None:
        self.observation_spec = Composite(
            observation=Bounded(-self.scale, self.scale, shape=(n, 1), device=self.device),
            state_features=Unbounded(shape=(n, 3), device=self.device),
            phase=Bounded(1, 2, shape=(n,), dtype=torch.long, device=self.device),
            shape=(n,),
        )
        self.action_spec = Categorical(2, shape=(n,), device=self.device)
        self.reward_spec = Unbounded(shape=(n, 1), device=self.device)
        self.full_done_spec = Composite(
            done=Binary(shape=(n, 1), dtype=torch.bool, device=self.device),
            terminated=Binary(shape=(n, 1), dtype=torch.bool, device=self.device),
            truncated=Binary(shape=(n, 1), dtype=torch.bool, device=self.device),
            success=Binary(shape=(n, 1), dtype=torch.bool, device=self.device),
            shape=(n,),
        )

    def _observe(self) -> TensorDict:
        sign = (self._phase * 2 - 3).to(torch.float32)
        observation = (sign * self.scale).unsqueeze(-1)
        features = torch.stack(
            [observation.squeeze(-1), self._x / self.length, self._t / EPISODE_CAP], dim=-1
        )
        return TensorDict(
            observation=observation,
            state_features=features,
            phase=self._phase.clone(),
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        mask = torch.ones_like(self._x, dtype=torch.bool) if mask is None else mask.reshape(-1)
        far = self.start == "far"
        self._x[mask] = self.length if far else 0
        self._phase[mask] = PHASE_HOME if far else PHASE_TO_APPLE
        self._t[mask] = 0
        out = self._observe()
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict["action"].reshape(-1)
        self._x, self._phase, reward, home = apple_step(self._x, self._phase, action, self.length)
        self._t += 1
        truncated = (self._t >= EPISODE_CAP) & ~home
        out = self._observe()
        out.set("reward", reward.unsqueeze(-1))
        out.set("terminated", home.unsqueeze(-1))
        out.set("truncated", truncated.unsqueeze(-1))
        out.set("done", (home | truncated).unsqueeze(-1))
        out.set("success", home.unsqueeze(-1))
        return out

    def _set_seed(self, seed: int | None) -> None:
        """The dynamics are deterministic; all randomness lives in the policy."""


class AppleRetrievalGym(gymnasium.Env):
    """Single-corridor gymnasium version of the same dynamics (``lit_rl/AppleRetrieval-v0``)."""

    def __init__(self, length: int = 30, scale: float = 0.1, start: str = "close"):
        if start not in START_POSITIONS:
            raise ValueError(f"unknown start {start!r}: choose one of {sorted(START_POSITIONS)}")
        self.length, self.scale, self.start = length, scale, start
        self.observation_space = gymnasium.spaces.Box(-scale, scale, shape=(1,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        sign = -1.0 if self._phase == PHASE_TO_APPLE else 1.0
        return np.array([sign * self.scale], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        far = self.start == "far"
        self._x = self.length if far else 0
        self._phase = PHASE_HOME if far else PHASE_TO_APPLE
        self._t = 0
        return self._obs(), {"x": self._x, "phase": self._phase}

    def step(self, action):
        x, phase, reward, home = apple_step(
            np.int64(self._x), np.int64(self._phase), np.int64(action), self.length
        )
        self._x, self._phase, self._t = int(x), int(phase), self._t + 1
        truncated = self._t >= EPISODE_CAP and not home
        info = {"x": self._x, "phase": self._phase}
        return self._obs(), float(reward), bool(home), bool(truncated), info


gymnasium.register("lit_rl/AppleRetrieval-v0", entry_point=AppleRetrievalGym)
