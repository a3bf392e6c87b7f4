"""Experiment trackers owned by the project."""

from lit_rl.loggers.neptune import NeptuneLogger

__all__ = ["NeptuneLogger"]
