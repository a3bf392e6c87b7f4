"""A user's own code the Gymnasium scenario reads by class path: a start-state sampler for Taxi-v3's
delivery phase and an observation encoder.

Taxi's episode has two phases: drive to the passenger and pick them up, then drive to the
destination and drop them off. ``PassengerAboard`` starts episodes in the second phase (the FAR
subspace of a Taxi preset): the passenger in the taxi, the taxi on any of the 25 cells and
any of the 4 destinations, drawn uniformly from the generator the environment hands it. It is an
example of the Gymnasium scenario's ``sampler`` start rule: called as ``sampler(env, rng)``, it
resets the env, puts it into a start state and returns ``(observation, info)``.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch

#: Taxi's passenger index for "in the taxi"
IN_TAXI = 4


class PassengerAboard:
    """Taxi-v3 start states with the passenger already in the taxi (the delivery phase)."""

    def __call__(self, env: gymnasium.Env, rng: np.random.Generator) -> tuple[int, dict]:
        env.reset()
        taxi = env.unwrapped
        row, col, destination = (int(x) for x in rng.integers((5, 5, 4)))
        taxi.s = taxi.encode(row, col, IN_TAXI, destination)
        return int(taxi.s), {"prob": 1.0, "action_mask": taxi.action_mask(taxi.s)}


class TinyEncoder(torch.nn.Module):
    """A user's own observation encoder (``scenario.encoder``): built with the observation space,
    called with the observation tensor, its output width in ``features``."""

    def __init__(self, observation_space: gymnasium.spaces.Box, width: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(observation_space.shape[0], width), torch.nn.ReLU())
        self.features = width

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.net(observation.float())
