"""Start-state samplers for Gymnasium's Taxi-v3 (docs/your_env.md): the delivery phase.

Taxi's episode has two phases: drive to the passenger and pick them up, then drive to the
destination and drop them off. ``PassengerAboard`` starts episodes in the second phase (the FAR
subspace of the tutorial's preset): the passenger in the taxi, the taxi on any of the 25 cells and
any of the 4 destinations, drawn uniformly from the generator the environment hands it. It is an
example of the Gymnasium scenario's ``sampler`` start rule: called as ``sampler(env, rng)``, it
resets the env, puts it into a start state and returns ``(observation, info)``.
"""

from __future__ import annotations

import gymnasium
import numpy as np

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
