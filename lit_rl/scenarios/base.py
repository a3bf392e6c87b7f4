"""The contract between the trainer and an environment family.

A scenario builds batched TorchRL environments that start in a named state subspace (``close`` for
the downstream task's start, ``far`` for states reached only later), the policy it is fine-tuned
with, and the share of training frames spent in each subspace (the paper's "FAR goes unvisited").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.envs import EnvBase
from torchrl.modules import ProbabilisticActor, ValueOperator


class TeacherLogits(TensorDictModuleBase):
    """Writes π*'s logits for each collected frame as ``teacher_logits`` (kickstarting's target).

    The collector runs it after the student's actor, so the KL is taken against π* on exactly the
    states (and, for recurrent scenarios, the teacher's own recurrent state) of the rollout.
    """

    def __init__(self, teacher: ProbabilisticActor):
        super().__init__()
        self.teacher = teacher
        self.in_keys = list(teacher.in_keys)
        self.out_keys = ["teacher_logits"]

    @torch.no_grad()
    def forward(self, td: TensorDictBase) -> TensorDictBase:
        td.set("teacher_logits", self.teacher.get_dist(td.copy()).logits)
        return td


@dataclass
class Policy:
    """The actor and critic of one agent; only the actor is ever regularised."""

    actor: ProbabilisticActor
    critic: ValueOperator

    def modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"actor": self.actor, "critic": self.critic})


class Scenario(ABC):
    """One environment family; subclasses define its dynamics, subspaces and default policy."""

    name: str
    subspaces: tuple[str, ...] = ("close", "far")
    #: subspace whose states the pre-training data covers (π* is good there)
    pretraining_subspace: str = "far"
    #: largest number of steps one evaluation episode may take
    max_episode_steps: int

    @abstractmethod
    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        """A batched environment whose episodes start in subspace ``start``.

        ``training`` is True for the training collector's environments (e.g. NetHack clips their
        reward; evaluation sees the raw reward)."""

    @abstractmethod
    def make_policy(self) -> Policy:
        """A freshly initialised actor and critic for this scenario's observations."""

    @abstractmethod
    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Share of the batch's frames that lie in each subspace."""

    def teacher_probe(self, teacher: ProbabilisticActor) -> TensorDictModuleBase:
        """A module writing π*'s ``teacher_logits`` for every collected frame (kickstarting)."""
        return TeacherLogits(teacher)

    def add_teacher_state(self, env: EnvBase, num_envs: int) -> EnvBase:
        """``env`` made to carry the recurrent state ``teacher_probe`` keeps (recurrent scenarios);
        only kickstarting's training envs need it."""
        return env

    def pretraining_sequences(
        self, rows: int, seq_length: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[TensorDictBase] | None:
        """Consecutive [rows, seq_length] chunks of the recorded pre-training dataset, in the
        policy's keys plus ``valid``, each row continuing the row of the chunk before; ``None``
        when the scenario has no dataset (π*'s own rollouts then stand in for it)."""
        return None

    def describe(self) -> dict:
        """Settings that identify the model architecture, stored with checkpoints."""
        return {"scenario": self.name}

    def check_start(self, start: str) -> None:
        if start not in self.subspaces:
            raise ValueError(
                f"unknown start subspace {start!r} for {self.name}: choose one of {self.subspaces}"
            )
