"""Montezuma's Revenge as a scenario (paper section 4): CLOSE = the game start in Room 1,
FAR = saved emulator states in Room 7 (a start-state pool built by `lit_rl.experts.montezuma_explorer`).

π* is pre-trained only on episodes that start in Room 7; fine-tuning plays the whole game from
Room 1. The FAR metric is the success rate in Room 7 (`MontezumaEnv`'s ``far_success``: a coin, a
new item, or leaving by a passage other than the entrance), exposed to `evaluate_episodes` as the
done-key ``success``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from tensordict import TensorDictBase
from torchrl.data import Binary
from torchrl.envs import EnvBase

from lit_rl.datasets.montezuma_trajectories import load_trajectory_buffer
from lit_rl.envs.montezuma import MAX_EPISODE_STEPS, STACK, MontezumaEnv
from lit_rl.envs.montezuma_states import StartStatePool
from lit_rl.models.atari_cnn import make_atari_actor_critic
from lit_rl.scenarios.base import Policy, Scenario

FAR_ROOM = 7


class MontezumaSuccessEnv(MontezumaEnv):
    """`MontezumaEnv` plus the done-key ``success``: True on the last step of an episode that had
    a FAR success. It is never True unless ``done`` is, so it never triggers an extra reset and
    training trajectories are cut exactly where they were before."""

    def _make_specs(self, n: int, n_actions: int) -> None:
        super()._make_specs(n, n_actions)
        self.full_done_spec["success"] = Binary(shape=(n, 1), dtype=torch.bool, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = super()._step(tensordict)
        success = out["episode_far_success"].unsqueeze(-1) & out["done"]
        out.set("success", success)
        return out


class Montezuma(Scenario):
    """Montezuma's Revenge with the paper's settings and the Nature-CNN two-value-head policy.

    Args:
        pool: start-state pool file for FAR (build it with ``make montezuma-pool``).
        far_room: the FAR room; pool states in other rooms are ignored, and training frames in
            rooms numbered ``far_room`` or higher (or on a later level) count as FAR visits.
        max_episode_steps: agent steps per episode (truncation); the paper uses 4500.
        sticky_prob: sticky-action probability (0.25 in the paper).
        pretraining_data: π*'s trajectory folder (``make montezuma-pistar``, or ``make
            montezuma-bc-data`` for the paper preset); when set, BC and
            EWC sample its states instead of fresh π* rollouts from the FAR pool.
        min_demonstrations: fewest trajectories ``pretraining_data`` may hold (paper: > 500).
    """

    name = "montezuma"
    pretraining_subspace = "far"

    def __init__(
        self,
        pool: str = "pools/montezuma_room7.pt",
        far_room: PositiveInt = FAR_ROOM,
        max_episode_steps: PositiveInt = MAX_EPISODE_STEPS,
        sticky_prob: ClosedUnitInterval = 0.25,
        pretraining_data: str | None = None,
        min_demonstrations: NonNegativeInt = 0,
    ):
        self.pool_path = pool
        self.far_room = far_room
        self.max_episode_steps = max_episode_steps
        self.sticky_prob = sticky_prob
        self.pretraining_data = pretraining_data
        self.min_demonstrations = min_demonstrations
        self._pool: StartStatePool | None = None

    def far_pool(self) -> StartStatePool:
        """The FAR start states, loaded once; a missing pool names the command that builds it."""
        if self._pool is None:
            path = Path(self.pool_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"start-state pool {path} not found: build it with `make montezuma-pool`"
                )
            pool = StartStatePool.load(path).subset([self.far_room])
            if len(pool) == 0:
                raise ValueError(
                    f"{path} holds no state in room {self.far_room}: rebuild it with "
                    f"`make montezuma-pool` (or a larger --frames budget)"
                )
            self._pool = pool
        return self._pool

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        """Training and evaluation envs are the same: `RNDFineTuning` clips the extrinsic reward
        for learning itself, so evaluation and episode statistics see the game score."""
        self.check_start(start)
        return MontezumaSuccessEnv(
            num_envs,
            start_states=self.far_pool() if start == "far" else None,
            sticky_prob=self.sticky_prob,
            max_episode_steps=self.max_episode_steps,
            far_rooms=(self.far_room,),
            seed=seed,
        )

    def make_policy(self) -> Policy:
        net = make_atari_actor_critic(n_actions=18, in_channels=STACK)
        return Policy(actor=net.get_policy_operator(), critic=net.get_value_operator())

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Share of the batch's frames in rooms before ``far_room`` (close) and from it on (far):
        the training-time room-visitation histogram the paper's "FAR goes unvisited" refers to."""
        far = (batch["room"] >= self.far_room) | (batch["level"] > 0)
        share = far.float().mean().item()
        return {"close": 1.0 - share, "far": share}

    def pretraining_states(self, seed: int):
        if self.pretraining_data is None:
            return None
        return load_trajectory_buffer(self.pretraining_data, self.min_demonstrations).sample

    def describe(self) -> dict:
        return {"scenario": self.name, "policy": "rnd_cnn_448", "actions": 18}
