"""The one small interface every knowledge-retention method implements.

A method is a configured component: its constructor takes only its own settings (what its YAML
under ``configs/method/`` lists), so the trainer takes a list of them and has no argument per
method. The trainer then ``attach``es it to the policy (state shaped like the behaviour
parameters is allocated there, before a checkpoint restores it), ``prepare``s it once from π* (and
its data, if it needs any), adds its scalar term to the actor-critic loss for each minibatch, and
lets it advance its own coefficient schedule after each optimiser step. Whatever it holds (θ*,
Fisher, coefficient) lives in buffers, so Lightning checkpoints save it and a resumed run restores
it instead of preparing again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.modules import ProbabilisticActor

from lit_rl.scenarios.base import ActorCritic


@dataclass
class RetentionContext:
    """What a method may read: the student actor, the frozen teacher π*, the behaviour parameters
    (named as inside the actor; the value head and fixed parts excluded), pre-training states."""

    actor: ProbabilisticActor
    teacher: ProbabilisticActor
    behaviour: dict[str, nn.Parameter]
    #: returns a batch of states from the pre-training data (n states)
    pretraining_states: Callable[[int], TensorDictBase]
    #: recurrent policies only: the next [rows, seq_length] chunk of pre-training sequences, each
    #: row continuing the same row of the previous chunk (``is_init`` marks episode starts)
    pretraining_sequences: Callable[[int, int], TensorDictBase] | None = None


class RetentionMethod(nn.Module):
    """Base class: subclasses override ``prepare_from`` and ``loss``; all hooks default to no-ops.

    ``name`` keys the method's loss (``train/loss_<name>``), its checkpoint state and the run's
    name; ``needs_teacher_logits`` asks the collector to run π* beside the student.
    """

    name: str = "retention"
    needs_teacher_logits: bool = False

    def __init__(self, coef: float = 0.0):
        super().__init__()
        if coef < 0:
            raise ValueError(f"{self.name}.coef must be >= 0, got {coef}")
        self.register_buffer("coef", torch.tensor(float(coef)))
        self.register_buffer("prepared", torch.tensor(False))

    def attach(self, policy: ActorCritic) -> None:
        """Bind to the trainer's policy once, at construction (before a checkpoint restores)."""

    def prepare(self, ctx: RetentionContext) -> None:
        """Prepare once; a method restored from a checkpoint is already prepared."""
        if not bool(self.prepared):
            self.prepare_from(ctx)
            self.prepared.fill_(True)

    def prepare_from(self, ctx: RetentionContext) -> None:
        """Compute what the method needs from π* before fine-tuning starts."""

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor | None:
        """The coefficient-weighted retention term for this minibatch (None: no term)."""
        return None

    def after_optimizer_step(self) -> None:
        """Advance a coefficient schedule; called after every optimiser step."""

    def on_env_frames(self, env_frames: int) -> None:
        """React to training progress measured in environment frames."""


def attach_methods(methods: list[RetentionMethod], policy: ActorCritic, has_teacher: bool) -> nn.ModuleDict:
    """The configured methods by name, each attached to the policy's parameter roles: the rule
    every trainer applies (each method once; retention needs a π* to retain)."""
    names = [method.name for method in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"model.retention lists a method twice ({names}): give each method once")
    if methods and not has_teacher:
        raise ValueError(
            "retention methods need π*: set model.pretrained (or model.teacher to start from scratch)"
        )
    for method in methods:
        method.attach(policy)
    return nn.ModuleDict({method.name: method for method in methods})


def buffer_name(param_name: str) -> str:
    """Module buffers may not contain dots; parameter names do."""
    return param_name.replace(".", "__")


def teacher_student_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over states of KL(π* ‖ π_θ) = Σ_a π*(a|s) (log π*(a|s) − log π_θ(a|s)) (paper §2);
    with ``mask``, the mean over the states where it is True (padding in sequence chunks)."""
    teacher_logp = torch.log_softmax(teacher_logits, dim=-1)
    student_logp = torch.log_softmax(student_logits, dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    return masked_mean(kl, mask)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True (all of them when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    weight = mask.reshape(values.shape).to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1)


def policy_logits(actor: ProbabilisticActor, states: TensorDictBase) -> torch.Tensor:
    """Logits of ``actor`` on ``states`` without sampling an action."""
    return actor.get_dist(states.copy()).logits


def sequence_model(actor: ProbabilisticActor):
    """A recurrent actor's logits module (its first module), whose ``replay(chunk, hidden)`` runs
    [B, T] rows from a given LSTM state and returns the logits with the state after the last step."""
    return actor.module[0]
