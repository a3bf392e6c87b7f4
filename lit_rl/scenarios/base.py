"""The contract between the trainer and an environment family.

A scenario builds batched TorchRL environments that start in a named state subspace (``close`` for
the downstream task's start, ``far`` for states reached only later), the policy it is fine-tuned
with, and the share of training frames spent in each subspace (the paper's "FAR goes unvisited").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

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
    """What a scenario builds: the actor and critic, and the role of their parameters.

    ``value_heads``: modules whose parameters only the value function reads (e.g. the value head
    of a shared trunk that the actor module also holds). ``fixed``: modules the scenario keeps
    frozen for the whole run (e.g. NetHack's encoders). Everything else the actor holds is
    behaviour. ``modules()`` packs them into the ``ActorCritic`` the trainer owns.
    """

    actor: ProbabilisticActor
    critic: ValueOperator
    value_heads: list[nn.Module] = field(default_factory=list)
    fixed: list[nn.Module] = field(default_factory=list)

    def modules(self) -> ActorCritic:
        value_only = [p for m in self.value_heads for p in m.parameters()]
        fixed = [p for m in self.fixed for p in m.parameters()]
        return ActorCritic(self.actor, self.critic, value_only, fixed)


class ActorCritic(nn.ModuleDict):
    """The policy contract: ``actor`` and ``critic`` (state-dict keys ``actor.…``/``critic.…``)
    plus the role of every parameter, which optimiser groups, retention penalties, Fisher
    estimates and freezing read instead of module names (paper §2: the critic is never
    regularised).

    - behaviour: parameters the action distribution depends on (a shared trunk included), minus
      the fixed ones; named as inside the actor, so π*'s copy of the actor has the same names.
    - value: parameters only the value function reads (declared value heads, and whatever the
      critic holds that the actor does not), minus the fixed ones.
    - fixed: frozen by the scenario for the whole run; no optimiser or retention method sees them,
      so a retention method's thaw can never wake them.
    """

    def __init__(
        self,
        actor: nn.Module,
        critic: nn.Module,
        value_only: Iterable[nn.Parameter] = (),
        fixed: Iterable[nn.Parameter] = (),
    ):
        super().__init__({"actor": actor, "critic": critic})
        value_ids, fixed_ids = {id(p) for p in value_only}, {id(p) for p in fixed}
        actor_ids = {id(p) for p in actor.parameters()}
        named = dict(self.named_parameters())
        self.fixed_names = {n for n, p in named.items() if id(p) in fixed_ids}
        self.value_names = {
            n
            for n, p in named.items()
            if (id(p) in value_ids or id(p) not in actor_ids) and n not in self.fixed_names
        }
        for name in self.fixed_names:
            named[name].requires_grad_(False)

    def behaviour_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters the behaviour depends on, named as inside the actor."""
        return {
            name: p
            for name, p in self["actor"].named_parameters()
            if f"actor.{name}" not in self.value_names and f"actor.{name}" not in self.fixed_names
        }

    def value_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters only the value function reads, named as inside this module."""
        return {name: p for name, p in self.named_parameters() if name in self.value_names}

    def select(self, prefixes: list[str]) -> list[nn.Parameter]:
        """Trainable parameters chosen by role (``actor`` = behaviour, ``critic`` = value) or by
        a deeper name prefix (``actor.module.0``); fixed parameters are never chosen."""
        chosen: dict[int, nn.Parameter] = {}
        for prefix in prefixes:
            if prefix == "actor":
                params = self.behaviour_parameters().values()
            elif prefix == "critic":
                params = self.value_parameters().values()
            else:
                params = [
                    p
                    for n, p in self.named_parameters()
                    if (n == prefix or n.startswith(prefix + ".")) and n not in self.fixed_names
                ]
            chosen.update({id(p): p for p in params})
        return list(chosen.values())


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

    def pretraining_states(self, seed: int) -> Callable[[int], TensorDictBase] | None:
        """A sampler of n flat states from the recorded pre-training dataset (BC replay, EWC's
        Fisher) for non-recurrent policies; ``None`` when the scenario has no dataset (π*'s own
        rollouts then stand in for it)."""
        return None

    def describe(self) -> dict:
        """Settings that identify the model architecture, stored with checkpoints."""
        return {"scenario": self.name}

    def check_start(self, start: str) -> None:
        if start not in self.subspaces:
            raise ValueError(
                f"unknown start subspace {start!r} for {self.name}: choose one of {self.subspaces}"
            )
