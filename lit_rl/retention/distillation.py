"""Retention by matching π*'s action distribution: behavioural-cloning replay and kickstarting.

Both add c · E_s KL(π*(·|s) ‖ π_θ(·|s)) (paper §2); they differ in where the states s come from.
BC replays states of the pre-training data, so it protects FAR even while training never visits it.
KS uses the current rollouts, so under a state coverage gap it pulls the agent towards π* on CLOSE
states, where π* is poor (the paper predicts it fails there).

Recurrent policies: BC replays consecutive sequence chunks, carrying the teacher's and the student's
LSTM states from one chunk to the next (detached: truncated back-propagation through time) and
resetting them at episode starts. KS reads ``teacher_logits`` that π* wrote while the rollout was
collected (``Scenario.teacher_probe``), from its own recurrent state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase

from lit_rl.retention.base import (
    RetentionContext,
    RetentionMethod,
    masked_mean,
    policy_logits,
    sequence_model,
    teacher_student_kl,
)


@dataclass
class BCConfig:
    """Behavioural-cloning replay: coef · E_{s∼pre-training data} KL(π* ‖ π_θ).

    ``target: action`` swaps the KL for the cross-entropy to the recorded expert action.
    The paper's NetHack setting: coef 2.0, no decay, 4096 states per update. Recurrent policies
    replay ``batch_size // seq_length`` rows of ``seq_length`` consecutive frames.
    """

    coef: float = 1.0
    target: Literal["teacher", "action"] = "teacher"
    batch_size: int = 256
    seq_length: int = 32

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_length < 1:
            raise ValueError(
                f"bc.batch_size ({self.batch_size}) and bc.seq_length ({self.seq_length}) must be >= 1"
            )


@dataclass
class KSConfig:
    """Kickstarting: coef_t · E_{s∼current rollouts} KL(π* ‖ π_θ), coef_t ← max(coef_t·decay, coef_min).

    Defaults are the paper code's (0.75, 0.99998, floor 0.33); the paper text says 0.5 with no floor
    (set ``coef_min: 0``).
    """

    coef: float = 0.75
    decay: float = 0.99998
    coef_min: float = 0.33


class BehaviouralCloningReplay(RetentionMethod):
    name = "bc"

    def __init__(self, config: BCConfig):
        super().__init__(config.coef)
        self.config = config
        # LSTM states carried between chunks; a resumed run restarts the stream, so they are not
        # checkpointed
        self._student_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._teacher_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor:
        if ctx.pretraining_sequences is not None:
            return self._sequence_loss(ctx)
        states = ctx.pretraining_states(self.config.batch_size)
        student = policy_logits(ctx.actor, states)
        if self.config.target == "action":
            return self.coef * torch.nn.functional.cross_entropy(student, states["action"])
        with torch.no_grad():
            teacher = policy_logits(ctx.teacher, states)
        return self.coef * teacher_student_kl(teacher, student)

    def _sequence_loss(self, ctx: RetentionContext) -> torch.Tensor:
        """The same terms on the next chunk, each network continuing from its own carried state."""
        seq_length = self.config.seq_length
        chunk = ctx.pretraining_sequences(max(1, self.config.batch_size // seq_length), seq_length)
        student, state = sequence_model(ctx.actor).replay(chunk, self._carried(self._student_state, chunk))
        self._student_state = (state[0].detach(), state[1].detach())
        valid = chunk.get("valid", None)
        if self.config.target == "action":
            ce = torch.nn.functional.cross_entropy(
                student.flatten(0, 1), chunk["action"].reshape(-1), reduction="none"
            )
            return self.coef * masked_mean(ce, valid)
        with torch.no_grad():
            teacher, self._teacher_state = sequence_model(ctx.teacher).replay(
                chunk, self._carried(self._teacher_state, chunk)
            )
        return self.coef * teacher_student_kl(teacher, student, valid)

    @staticmethod
    def _carried(state, chunk: TensorDictBase):
        """The carried state if it fits this chunk's rows (else start from zeros)."""
        if state is None or state[0].shape[0] != chunk.shape[0]:
            return None
        return state


class Kickstarting(RetentionMethod):
    name = "ks"

    def __init__(self, config: KSConfig):
        super().__init__(config.coef)
        self.config = config
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def loss(self, ctx: RetentionContext, batch: TensorDictBase) -> torch.Tensor:
        """KL against the ``teacher_logits`` π* wrote for each frame while it was collected."""
        student = policy_logits(ctx.actor, batch)
        return self.coef * teacher_student_kl(batch["teacher_logits"], student)

    def after_optimizer_step(self) -> None:
        """c_t = max(c_0 · decay^t, c_min), computed from the step count in double precision so the
        floor arrives on the documented update (≈41,050 for the paper code's values)."""
        self.steps += 1
        c = self.config
        self.coef.fill_(max(c.coef * c.decay ** int(self.steps), c.coef_min))
