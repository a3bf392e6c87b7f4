"""Retention by matching π*'s action distribution: behavioural-cloning replay and kickstarting.

Both add c · E_s KL(π*(·|s) ‖ π_θ(·|s)) (paper §2); they differ in where the states s come from.
BC replays states of the pre-training data, so it protects FAR even while training never visits it.
KS uses the current rollouts, so under a state coverage gap it pulls the agent towards π* on CLOSE
states, where π* is poor (the paper predicts it fails there).

Recurrent policies: BC replays consecutive sequence chunks, carrying the teacher's and the student's
LSTM states from one chunk to the next (detached: truncated back-propagation through time) and
resetting them at episode starts. KS reads ``teacher_logits`` that π* wrote while the rollout was
collected (``Scenario.teacher_probe``), from its own recurrent state, and the student's logits the PPO
loss already computed on the same minibatch (``CURRENT_LOGITS``), so it adds no network pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveInt
from tensordict import TensorDictBase

from lit_rl.retention.base import (
    RetentionContext,
    RetentionMethod,
    masked_mean,
    policy_logits,
    sequence_model,
    teacher_student_kl,
)

#: minibatch key under which the PPO loss leaves the actor's logits of its own pass (with their
#: graph); kickstarting reads them instead of running the actor again
CURRENT_LOGITS = "current_logits"


class CarriedSequence:
    """Replays consecutive [B, T] chunks through a recurrent actor, carrying its LSTM state from
    one chunk to the next (detached: truncated back-propagation through time); ``is_init`` resets
    it inside a chunk. Shared by BC pre-training and BC replay. The carried state is not
    checkpointed: a resumed run restarts its stream."""

    def __init__(self):
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def logits(self, actor, chunk: TensorDictBase, detach: bool = True) -> torch.Tensor:
        state = self.state if self.state is not None and self.state[0].shape[0] == chunk.shape[0] else None
        logits, state = sequence_model(actor).replay(chunk, state)
        self.state = (state[0].detach(), state[1].detach()) if detach else state
        return logits


def sequence_cross_entropy(logits: torch.Tensor, chunk: TensorDictBase) -> torch.Tensor:
    """− E_{(s,a)∼D} log π_θ(a|s) over a chunk's valid frames (padding masked): the BC loss."""
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), chunk["action"].reshape(-1), reduction="none"
    )
    return masked_mean(ce, chunk.get("valid", None))


class BehaviouralCloningReplay(RetentionMethod):
    """Behavioural-cloning replay: coef · E_{s∼pre-training data} KL(π* ‖ π_θ).

    Args:
        coef: c. The paper's NetHack setting: 2.0, no decay, 4096 states per update.
        target: ``teacher`` (KL to π*) or ``action`` (cross-entropy to the recorded expert action).
        batch_size: pre-training states per minibatch; recurrent policies replay
            ``batch_size // seq_length`` rows of ``seq_length`` consecutive frames.
        seq_length: frames per replayed row (recurrent policies).
    """

    name = "bc"

    def __init__(
        self,
        coef: NonNegativeFloat = 1.0,
        target: Literal["teacher", "action"] = "teacher",
        batch_size: PositiveInt = 256,
        seq_length: PositiveInt = 32,
    ):
        super().__init__(coef)
        if batch_size < 1 or seq_length < 1:
            raise ValueError(f"bc.batch_size ({batch_size}) and bc.seq_length ({seq_length}) must be >= 1")
        self.target, self.batch_size, self.seq_length = target, batch_size, seq_length
        self._student, self._teacher = CarriedSequence(), CarriedSequence()

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor:
        if ctx.pretraining_sequences is not None:
            return self._sequence_loss(ctx)
        states = ctx.pretraining_states(self.batch_size)
        student = policy_logits(ctx.actor, states)
        if self.target == "action":
            return self.coef * torch.nn.functional.cross_entropy(student, states["action"])
        with torch.no_grad():
            teacher = policy_logits(ctx.teacher, states)
        return self.coef * teacher_student_kl(teacher, student)

    def _sequence_loss(self, ctx: RetentionContext) -> torch.Tensor:
        """The same terms on the next chunk, each network continuing from its own carried state."""
        chunk = ctx.pretraining_sequences(max(1, self.batch_size // self.seq_length), self.seq_length)
        student = self._student.logits(ctx.actor, chunk)
        if self.target == "action":
            return self.coef * sequence_cross_entropy(student, chunk)
        with torch.no_grad():
            teacher = self._teacher.logits(ctx.teacher, chunk)
        return self.coef * teacher_student_kl(teacher, student, chunk.get("valid", None))


class Kickstarting(RetentionMethod):
    """Kickstarting: coef_t · E_{s∼current rollouts} KL(π* ‖ π_θ), coef_t ← max(coef_t·decay, coef_min).

    Defaults are the paper code's (0.75, 0.99998, floor 0.33); the paper text says 0.5 with no floor
    (``coef_min: 0``).
    """

    name = "ks"
    needs_teacher_logits = True

    def __init__(
        self,
        coef: NonNegativeFloat = 0.75,
        decay: ClosedUnitInterval = 0.99998,
        coef_min: NonNegativeFloat = 0.33,
    ):
        super().__init__(coef)
        if not 0 < decay <= 1 or coef_min < 0:
            raise ValueError(f"ks.decay must be in (0, 1] and ks.coef_min >= 0, got {decay}, {coef_min}")
        self.initial_coef, self.decay, self.coef_min = coef, decay, coef_min
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor:
        """KL against the ``teacher_logits`` π* wrote for each frame while it was collected; the
        student's logits are the PPO loss's (``CURRENT_LOGITS``) when it left them."""
        student = batch.get(CURRENT_LOGITS, None)
        if student is None:
            student = policy_logits(ctx.actor, batch)
        return self.coef * teacher_student_kl(batch["teacher_logits"], student)

    def after_optimizer_step(self) -> None:
        """c_t = max(c_0 · decay^t, c_min), computed from the step count in double precision so the
        floor arrives on the documented update (≈41,050 for the paper code's values)."""
        self.steps += 1
        self.coef.fill_(max(self.initial_coef * self.decay ** int(self.steps), self.coef_min))
