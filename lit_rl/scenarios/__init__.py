"""Scenarios: an environment family, its CLOSE/FAR subspaces and its default policy."""

from lit_rl.scenarios.apple import AppleRetrieval
from lit_rl.scenarios.base import Policy, Scenario

__all__ = ["AppleRetrieval", "Policy", "Scenario"]
