"""Scenarios: an environment family, its CLOSE/FAR subspaces and its default policy."""

from lit_rl.scenarios.apple import AppleRetrieval
from lit_rl.scenarios.base import Policy, Scenario

__all__ = ["AppleRetrieval", "Policy", "Scenario"]
from lit_rl.scenarios.gymnasium import Gymnasium as Gymnasium  # noqa: E402
from lit_rl.scenarios.minihack import MiniHack as MiniHack  # noqa: E402
from lit_rl.scenarios.montezuma import Montezuma as Montezuma  # noqa: E402
from lit_rl.scenarios.nethack import NetHack as NetHack  # noqa: E402
from lit_rl.scenarios.robotic import RoboticSequence as RoboticSequence  # noqa: E402
