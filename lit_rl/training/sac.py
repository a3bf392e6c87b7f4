"""SAC fine-tuning with retention methods: what is SAC's own on top of the shared ``FineTuning``.

How a batch is collected: a TorchRL ``Collector`` in this process yields batches of
``collection.num_envs × rollout_length`` fresh frames (uniformly random actions for the first
``replay.start_steps`` frames: TorchRL's ``init_random_frames``). The update: ``learn`` writes them
into a TorchRL replay buffer and runs ``sac.updates_per_frame`` SAC updates per new frame, each on
``sac.batch_size`` transitions sampled uniformly from the buffer, with manual optimisation:

    L = L_Q(φ) + L_π(θ) + L_α(α) + Σ_m L_m(θ)

L_Q, L_π, L_α are TorchRL's ``SACLoss`` (Haarnoja et al. 2018: twin Q-networks with soft target
networks, reparameterised actor loss E[α log π(a|s) − min_k Q_k(s, a)], automatic entropy tuning
towards a target entropy of −|A|); L_m are the retention terms (paper §2), which read only the
actor θ: the critics φ are never regularised. One Adam optimiser holds three groups (actor,
critics, log α) at ``sac.lr``; each loss term's gradient reaches only its own group (SACLoss detaches
the critics in the actor loss and the actor in the critic loss), so one step equals three
separate Adam steps.

The budget counts environment frames. The same module pre-trains π* (no ``pretrained``;
``collection.start: far_tasks``) and exports it with its final replay buffer (``export.transitions``
transitions, the file ``<export.policy stem>.buffer.pt``), which BC, EWC and EM read.

Episodic memory: ``EpisodicMemory`` hands π*'s transitions to the trainer once; they fill the
start of the buffer and the writer (``KeepFirstWriter``) never overwrites them, so every update
samples from π*'s and the online transitions alike.

Checkpoints hold the replay buffer (its filled part, the writer's cursor and the kept count):
a resumed run continues with exactly the transitions it had. DDP: every rank has its own
collector (seeded apart), its own replay buffer and the same number of updates per batch
(``num_envs × rollout_length × updates_per_frame``), so gradient all-reduces pair up; a
checkpoint stores rank 0's buffer, which every rank loads on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.writers import RoundRobinWriter
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SACLoss, SoftUpdate

from lit_rl.models.policy_io import atomic_torch_save
from lit_rl.retention import RetentionMethod
from lit_rl.safe_load import safe_load
from lit_rl.scenarios.base import Scenario
from lit_rl.training.lifecycle import FineTuning
from lit_rl.training.settings import Budget, Collection, Evaluation, Export, settings

#: the transition keys the replay buffer keeps (everything the SAC loss and the retention terms read);
#: a scenario without stages (the Gymnasium scenario) has no ``stage`` keys, which are then skipped
TRANSITION_KEYS = (
    "observation",
    "stage",
    "action",
    ("next", "observation"),
    ("next", "stage"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
)
#: stage index of push-wall in the robotic sequence (π*'s trajectories whose likelihood is tracked)
PUSH_WALL_STAGE = 3


class KeepFirstWriter(RoundRobinWriter):
    """TorchRL's round-robin writer that never overwrites the first ``kept`` slots.

    ``keep(n)`` after the first ``n`` transitions are written (episodic memory's π* transitions):
    later writes cycle through slots ``n … capacity − 1`` only. ``kept`` is part of the writer's
    state, so a checkpoint round trip keeps the protection.
    """

    def __init__(self) -> None:
        super().__init__()
        self.kept = 0

    def keep(self, n: int) -> None:
        self.kept = n
        self._cursor = max(self._cursor, n)

    def extend(self, data) -> torch.Tensor:
        capacity = self._storage._max_size_along_dim0(batched_data=data)
        ring = capacity - self.kept
        if ring <= 0:
            raise ValueError(
                f"the replay buffer ({capacity}) has no room besides {self.kept} kept transitions"
            )
        start = self._cursor - self.kept
        index = self.kept + (torch.arange(start, start + len(data), dtype=torch.long) % ring)
        self._cursor = self.kept + (start + len(data)) % ring
        self._write_count += len(data)
        self._storage.set(index, data)
        self._mark_update_entities(index)
        return index

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kept": self.kept}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.kept = int(state_dict.get("kept", 0))


@dataclass
class Replay:
    """The replay buffer and what fills it before the policy acts.

    Attributes:
        buffer_size: replay capacity in transitions (paper: 100k).
        start_steps: frames of warm-up behaviour before the policy acts (counted once per run, so
            a resumed run does not repeat them; TorchRL's ``init_random_frames`` when ``random``).
        warmup: behaviour of those frames: ``random`` (uniform actions, the paper's) or
            ``scripted`` (the scenario's ``scripted_policy``, e.g. Meta-World's scripted experts
            with Gaussian noise of std ``warmup_noise``: a π* pre-training shortcut for small
            budgets, documented in docs/robotic.md).
        warmup_noise: the scripted warm-up's action noise.
        warmup_bc_updates: with ``scripted`` warm-up, this many maximum-likelihood updates of the
            actor on the warm-up transitions (− E log π_θ(a|s)) when the warm-up ends.
    """

    buffer_size: PositiveInt = 100_000
    start_steps: NonNegativeInt = 10_000
    warmup: Literal["random", "scripted"] = "random"
    warmup_noise: NonNegativeFloat = 0.3
    warmup_bc_updates: NonNegativeInt = 0


@dataclass
class SoftActorCritic:
    """SAC's own settings (Haarnoja et al. 2018; paper App. B.3).

    Attributes:
        lr: Adam's learning rate for the actor, the critics and log α (paper: 1e-3).
        batch_size: transitions per update (paper: 128).
        updates_per_frame: SAC updates per collected frame (1: one per environment step).
        gamma, tau: discount; Polyak factor of the target critics.
        alpha_init: initial entropy coefficient (tuned automatically towards −|A|).
    """

    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 128
    updates_per_frame: PositiveFloat = 1.0
    gamma: ClosedUnitInterval = 0.99
    tau: ClosedUnitInterval = 0.005
    alpha_init: PositiveFloat = 1.0


@dataclass
class LogLikelihood:
    """Attributes:
    every_frames: period of the log-likelihood of π*'s push-wall transitions under the current
        policy (paper: every 50k steps); 0 switches it off.
    transitions: how many of π*'s latest push-wall transitions are scored.
    """

    every_frames: NonNegativeInt = 50_000
    transitions: PositiveInt = 2_000


@dataclass
class SACExport(Export):
    """Attributes:
    policy: where to write the trained policy; its replay buffer goes beside it.
    transitions: how many of the buffer's latest transitions the export keeps.
    """

    transitions: NonNegativeInt = 100_000


class SACFineTuning(FineTuning):
    """SAC fine-tuning of a pre-trained policy, with any combination of retention methods.

    Args: ``scenario`` (one with a Gaussian actor and a Q critic, e.g. ``RoboticSequence``),
    ``pretrained`` (π*: actor, twin critics, target critics, log α), ``teacher``, ``seed``,
    ``collection`` (in-process only: ``workers`` 1, ``mode`` sync), ``budget``, ``evaluation``,
    ``export`` and ``retention`` as in ``FineTuning``; SAC's own groups are ``replay``
    (``Replay``), ``sac`` (``SoftActorCritic``) and ``loglik`` (``LogLikelihood``).
    """

    def __init__(
        self,
        scenario: Scenario,
        pretrained: str | None = None,
        teacher: str | None = None,
        seed: int = 0,
        collection: Collection = Collection(num_envs=4, rollout_length=50),
        budget: Budget = Budget(frames=100_000, learning_starts=1_000),
        replay: Replay = Replay(),
        sac: SoftActorCritic = SoftActorCritic(),
        evaluation: Evaluation = Evaluation(episodes=10, deterministic=True),
        loglik: LogLikelihood = LogLikelihood(),
        export: SACExport = SACExport(),
        retention: list[RetentionMethod] | None = None,
    ):
        self.replay, self.sac = settings(Replay, replay), settings(SoftActorCritic, sac)
        self.loglik = settings(LogLikelihood, loglik)
        collection, export = settings(Collection, collection), settings(SACExport, export)
        if collection.workers != 1 or collection.mode != "sync":
            raise ValueError(
                f"model.collection.workers={collection.workers}, mode={collection.mode}: the SAC trainer "
                "collects in its own process; set workers: 1 and mode: sync"
            )
        super().__init__(
            scenario, pretrained, teacher, seed, collection, budget, evaluation, export, retention
        )
        self.buffer = self._make_buffer()
        self.register_buffer("next_loglik_at", torch.tensor(0, dtype=torch.long))
        self.register_buffer("warmup_cloned", torch.tensor(False))
        self._loglik_states: TensorDictBase | None = None

    def build_learner(self) -> None:
        self.sac_loss = SACLoss(
            self.policy["actor"],
            self.policy["critic"],
            num_qvalue_nets=2,
            loss_function="l2",
            alpha_init=self.sac.alpha_init,
            action_spec=self.policy["actor"].spec["action"],
            delay_qvalue=True,
        )
        self.sac_loss.make_value_estimator(gamma=self.sac.gamma)
        # SACLoss trains its own stacked copies of the critic (``qvalue_network_params``); the module
        # it copied them from enters no loss. Frozen, so DDP's reducer does not wait for its gradients.
        self.policy["critic"].requires_grad_(False)
        _ = self.sac_loss.target_entropy  # registers its lazy buffer, so exports always hold it
        self.target_update = SoftUpdate(self.sac_loss, tau=self.sac.tau)
        #: what an export (π*) holds and a fine-tuning run loads: actor, critics, targets, log α
        self._exported = nn.ModuleDict({"actor": self.policy["actor"], "sac_loss": self.sac_loss})

    @property
    def exported(self) -> nn.Module:
        return self._exported

    def _make_buffer(self) -> TensorDictReplayBuffer:
        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(self.replay.buffer_size),
            writer=KeepFirstWriter(),
            batch_size=self.sac.batch_size,
        )

    # --- collection -------------------------------------------------------------------------------
    def make_collector(self, remaining_frames: int):
        """TorchRL's ``Collector`` in this process: uniformly random actions (or the scenario's
        scripted experts) for what is left of ``replay.start_steps``, then the actor."""
        c, handed_out = self.collection, int(self.env_frames)
        frames_per_batch = c.num_envs * c.rollout_length
        random_frames = max(0, self.replay.start_steps - handed_out)
        seed = self._env_seed()
        env = self.scenario.make_env(c.num_envs, c.start, seed, training=True)
        policy, warmup_frames = (
            self.policy["actor"],
            math.ceil(random_frames / frames_per_batch) * frames_per_batch,
        )
        if self.replay.warmup == "scripted" and warmup_frames:
            scripted = self.scenario.scripted_policy(self.replay.warmup_noise, seed)
            policy = _Switch(scripted, policy, warmup_frames)
            warmup_frames = 0
        collector = Collector(
            env,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=max(1, math.ceil(remaining_frames / frames_per_batch)) * frames_per_batch,
            init_random_frames=warmup_frames,
            policy_device=self.device,
            storing_device=self.device,
            exploration_type=ExplorationType.RANDOM,
        )
        return collector, policy

    # --- lifecycle --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """The shared preparation, then episodic memory's π* transitions into the buffer's kept
        slots (once: a resumed buffer already holds them)."""
        fresh = len(self.buffer) == 0
        super().on_fit_start()
        for method in self.retention.values():
            memory = getattr(method, "replay_memory", None)
            transitions = memory() if memory is not None else None
            if fresh and transitions is not None:
                self.buffer.extend(transitions.select(*TRANSITION_KEYS, strict=False).to(self.device))
                self.buffer.writer.keep(len(self.buffer))

    def on_train_start(self) -> None:
        self._maybe_loglik()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The replay buffer's filled part and its writer state (plain tensors and numbers, so the
        checkpoint loads with ``weights_only``)."""
        size = len(self.buffer)
        stored = self.buffer.storage[:size] if size else None
        checkpoint["replay_buffer"] = {
            "size": size,
            "transitions": stored.clone().to_dict() if stored is not None else {},
            "writer": self.buffer.writer.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("replay_buffer")
        if not state:
            return
        self.buffer = self._make_buffer()
        if state["size"]:
            data = TensorDict(state["transitions"], batch_size=[state["size"]])
            self.buffer.storage.set(torch.arange(state["size"]), data)
        self.buffer.writer.load_state_dict(state["writer"])

    def on_fit_end(self) -> None:
        """π* (the shared export), then its latest replay transitions beside it."""
        super().on_fit_end()
        path = self.export.policy
        size = min(len(self.buffer), self.export.transitions)
        if path and size and self.trainer.is_global_zero:
            atomic_torch_save(
                {"size": size, "transitions": self.latest_transitions(size).to_dict()},
                exported_buffer_path(path),
            )

    def latest_transitions(self, n: int) -> TensorDictBase:
        """The ``n`` most recently written transitions of the buffer, oldest first."""
        writer, size = self.buffer.writer, len(self.buffer)
        ring = torch.arange(writer.kept, size)
        order = torch.cat([ring[ring >= writer._cursor], ring[ring < writer._cursor]])
        return self.buffer.storage[order[-n:]]

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        lr = self.sac.lr
        groups = [
            {"params": list(self.policy.behaviour_parameters().values()), "lr": lr},
            {"params": list(self.sac_loss.qvalue_network_params.values(True, True)), "lr": lr},
            {"params": [self.sac_loss.log_alpha], "lr": lr},
        ]
        return torch.optim.Adam(groups)

    def learn(self, batch: TensorDictBase, terms: dict) -> None:
        """Store the batch, then ``updates_per_frame`` SAC updates per new frame on uniform samples."""
        frames = batch.numel()
        self.buffer.extend(batch.reshape(-1).select(*TRANSITION_KEYS, strict=False))
        replay, sac = self.replay, self.sac
        if (
            replay.warmup_bc_updates
            and not bool(self.warmup_cloned)
            and int(self.env_frames) >= replay.start_steps
        ):
            self._clone_warmup(terms)
        if int(self.env_frames) >= self.budget.learning_starts and len(self.buffer) >= sac.batch_size:
            for _ in range(max(1, round(frames * sac.updates_per_frame))):
                self._update(self.buffer.sample(), terms)
        self._maybe_loglik()

    def _clone_warmup(self, terms: dict) -> None:
        """Maximum-likelihood behavioural cloning of the warm-up transitions into the actor:
        − E_{(s,a)∼buffer} log π_θ(a|s) under the tanh-Gaussian, one Adam step per batch."""
        optimizer = self.optimizers()
        for _ in range(self.replay.warmup_bc_updates):
            sample = self.buffer.sample()
            loss = -_loglik(self.policy["actor"], sample).mean()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            terms.setdefault("loss_warmup_bc", []).append(loss.detach())
        self.warmup_cloned.fill_(True)

    def _update(self, sample: TensorDictBase, terms: dict) -> None:
        out = self.sac_loss(sample)
        losses = {k: out[k] for k in ("loss_actor", "loss_qvalue", "loss_alpha")}
        losses.update(self.retention_losses(sample))
        if self.optimise(losses, terms):
            self.target_update.step()
            terms.setdefault("alpha", []).append(torch.as_tensor(out["alpha"]).detach())
            terms.setdefault("entropy", []).append(torch.as_tensor(out["entropy"]).detach())

    def extra_metrics(self, batch: TensorDictBase) -> dict[str, float]:
        return {"train/buffer_size": float(len(self.buffer))}

    # --- π*'s push-wall trajectories under the current policy -------------------------------------
    def _maybe_loglik(self) -> None:
        """Every ``loglik_every_frames``: log π_θ(a|s) on π*'s own push-wall transitions (their mean
        as ``eval/push_wall/pi_star_loglik``; the whole vector to ``<run>/loglik/<frames>.pt`` for
        the PCA over training, paper §5b). Rank 0 only; needs π*'s replay file."""
        every = self.loglik.every_frames
        if not every or int(self.env_frames) < int(self.next_loglik_at) or self.hparams.pretrained is None:
            return
        frames = int(self.env_frames)
        self.next_loglik_at.fill_((frames // every + 1) * every)
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        states = self._pi_star_push_wall()
        if states is None:
            return
        values = push_wall_loglik(self.policy["actor"], states)
        folder = Path(self.trainer.default_root_dir) / "loglik"
        atomic_torch_save({"env_steps": frames, "loglik": values}, folder / f"{frames:09d}.pt")
        for logger in self.trainer.loggers:
            logger.log_metrics(
                {"eval/push_wall/pi_star_loglik": values.mean().item(), "eval/env_frames": float(frames)},
                step=self.trainer.global_step,
            )

    def _pi_star_push_wall(self) -> TensorDictBase | None:
        if self._loglik_states is None:
            path = getattr(self.scenario, "pretraining_buffer", None)
            if path is None or not Path(path).is_file():
                return None
            from_file = safe_load(path)
            data = TensorDict(from_file["transitions"], batch_size=[from_file["size"]])
            data = data[data["stage"] == PUSH_WALL_STAGE]
            self._loglik_states = data[-self.loglik.transitions :].to(self.device)
        return self._loglik_states


class _Switch(TensorDictModuleBase):
    """Acts with ``first`` for ``frames`` frames (counted per call over the batch), then with
    ``then`` (the scripted warm-up before the actor)."""

    def __init__(self, first, then, frames: int):
        super().__init__()
        self.first, self.then, self.left = first, then, frames
        self.in_keys, self.out_keys = list(then.in_keys), ["action"]

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        if self.left > 0:
            self.left -= td.numel()
            return self.first(td)
        return self.then(td)


def _loglik(actor, transitions: TensorDictBase) -> torch.Tensor:
    """log π_θ(a|s) of every stored (s, a) under ``actor``'s tanh-Gaussian (actions pulled inside
    (−1, 1) by 1e-6 so the inverse tanh stays finite); differentiable."""
    with set_exploration_type(ExplorationType.RANDOM):
        dist = actor.get_dist(transitions.select("observation", "stage").clone())
    action = transitions["action"].clamp(-1 + 1e-6, 1 - 1e-6)
    return dist.log_prob(action)


@torch.no_grad()
def push_wall_loglik(actor, transitions: TensorDictBase) -> torch.Tensor:
    """log π_θ(a|s) of π*'s stored push-wall transitions under ``actor`` (no gradient)."""
    return _loglik(actor, transitions)


def exported_buffer_path(export_policy: str | Path) -> Path:
    """``pretrained/robotic.pt`` → ``pretrained/robotic.buffer.pt``."""
    path = Path(export_policy)
    return path.with_name(f"{path.stem}.buffer.pt")
