"""SAC fine-tuning with retention methods, as one LightningModule (the off-policy trainer).

The collector-as-dataloader pattern of ``PPOFineTuning``: a TorchRL ``Collector`` yields batches of
``num_envs × rollout_length`` fresh frames (uniformly random actions for the first
``start_steps`` frames: TorchRL's ``init_random_frames``); ``training_step`` writes them into a
TorchRL replay buffer and runs ``updates_per_frame`` SAC updates per new frame, each on
``batch_size`` transitions sampled uniformly from the buffer, with manual optimisation:

    L = L_Q(φ) + L_π(θ) + L_α(α) + Σ_m L_m(θ)

L_Q, L_π, L_α are TorchRL's ``SACLoss`` (Haarnoja et al. 2018: twin Q-networks with soft target
networks, reparameterised actor loss E[α log π(a|s) − min_k Q_k(s, a)], automatic entropy tuning
towards a target entropy of −|A|); L_m are the retention terms (paper §2), which read only the
actor θ: the critics φ are never regularised. One Adam optimiser holds three groups (actor,
critics, log α) at ``lr``; each loss term's gradient reaches only its own group (SACLoss detaches
the critics in the actor loss and the actor in the critic loss), so one step equals three
separate Adam steps.

The budget counts environment frames. The same module pre-trains π* (no ``pretrained``;
``train_start: far_tasks``) and exports it with its final replay buffer (``export_transitions``
transitions, the file ``<export_policy stem>.buffer.pt``), which BC, EWC and EM read.

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

import copy
import math
from collections.abc import Iterator
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
from lightning import LightningModule
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.writers import RoundRobinWriter
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SACLoss, SoftUpdate

from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.models.policy_io import atomic_torch_save, load_policy, save_policy
from lit_rl.retention import RetentionContext, RetentionMethod
from lit_rl.retention.base import attach_methods
from lit_rl.scenarios.base import Scenario
from lit_rl.training.run_identity import methods_label

#: the transition keys the replay buffer keeps (everything the SAC loss and the retention terms read)
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


class SACFineTuning(LightningModule):
    """SAC fine-tuning of a pre-trained policy, with any combination of retention methods.

    Args:
        scenario: the environment family (a scenario with a Gaussian actor and a Q critic, e.g.
            ``RoboticSequence``).
        pretrained: π* exported by pre-training (actor, twin critics, target critics, log α);
            start point and teacher. ``None`` trains from scratch (pre-training).
        train_start: subspace (or training start) the training episodes start in.
        budget_frames: environment frames to train for.
        num_envs, rollout_length: one collected batch is ``num_envs × rollout_length`` frames.
        start_steps: frames of uniformly random actions before the policy acts (counted once per
            run, so a resumed run does not repeat them).
        buffer_size, batch_size: replay capacity and transitions per update (paper: 100k, 128).
        updates_per_frame: SAC updates per collected frame (1: one per environment step).
        learning_starts: frames collected before the first update.
        warmup: behaviour of the first ``start_steps`` frames: ``random`` (uniform actions, the
            paper's) or ``scripted`` (the scenario's ``scripted_policy``, e.g. Meta-World's
            scripted experts with Gaussian noise of std ``warmup_noise``: a π* pre-training
            shortcut for small budgets, documented in docs/robotic.md).
        warmup_bc_updates: with ``scripted`` warm-up, this many maximum-likelihood updates of the
            actor on the warm-up transitions (− E log π_θ(a|s), batches of ``batch_size``) when the
            warm-up ends, before SAC's own updates (π*'s actor starts from a clone of the experts).
        lr: Adam's learning rate for the actor, the critics and log α (paper: 1e-3).
        gamma, tau: discount; Polyak factor of the target critics.
        alpha_init: initial entropy coefficient (tuned automatically towards −|A|).
        eval_every_frames, eval_episodes, eval_seed, eval_deterministic: the evaluator (see
            ``PPOFineTuning``); ``SubspaceEvaluation`` reads them.
        loglik_every_frames: period of the log-likelihood of π*'s push-wall transitions under the
            current policy (paper: every 50k steps); 0 switches it off.
        loglik_transitions: how many of π*'s latest push-wall transitions are scored.
        export_policy: where to write the trained policy; its replay buffer goes beside it.
        export_transitions: how many of the buffer's latest transitions the export keeps.
        retention: the retention methods (``configs/method/robotic/*.yaml``).
    """

    def __init__(
        self,
        scenario: Scenario,
        pretrained: str | None = None,
        teacher: str | None = None,
        train_start: str = "close",
        budget_frames: PositiveInt = 100_000,
        num_envs: PositiveInt = 4,
        rollout_length: PositiveInt = 50,
        start_steps: NonNegativeInt = 10_000,
        buffer_size: PositiveInt = 100_000,
        batch_size: PositiveInt = 128,
        updates_per_frame: PositiveFloat = 1.0,
        learning_starts: NonNegativeInt = 1_000,
        warmup: Literal["random", "scripted"] = "random",
        warmup_noise: NonNegativeFloat = 0.3,
        warmup_bc_updates: NonNegativeInt = 0,
        seed: int = 0,
        lr: PositiveFloat = 1e-3,
        gamma: ClosedUnitInterval = 0.99,
        tau: ClosedUnitInterval = 0.005,
        alpha_init: PositiveFloat = 1.0,
        eval_every_frames: PositiveInt = 50_000,
        eval_episodes: PositiveInt = 10,
        eval_seed: int = 10_000,
        eval_deterministic: bool = True,
        loglik_every_frames: NonNegativeInt = 50_000,
        loglik_transitions: PositiveInt = 2_000,
        export_policy: str | None = None,
        export_transitions: NonNegativeInt = 100_000,
        retention: list[RetentionMethod] | None = None,
    ):
        super().__init__()
        scenario.check_start(train_start)
        self.save_hyperparameters(ignore=["retention"])
        self.automatic_optimization = False
        self.scenario = scenario
        self.policy = scenario.make_policy().modules()
        self.sac_loss = SACLoss(
            self.policy["actor"],
            self.policy["critic"],
            num_qvalue_nets=2,
            loss_function="l2",
            alpha_init=alpha_init,
            action_spec=self.policy["actor"].spec["action"],
            delay_qvalue=True,
        )
        self.sac_loss.make_value_estimator(gamma=gamma)
        # SACLoss trains its own stacked copies of the critic (``qvalue_network_params``); the module
        # it copied them from enters no loss. Frozen, so DDP's reducer does not wait for its gradients.
        self.policy["critic"].requires_grad_(False)
        _ = self.sac_loss.target_entropy  # registers its lazy buffer, so exports always hold it
        self.target_update = SoftUpdate(self.sac_loss, tau=tau)
        #: what an export (π*) holds and a fine-tuning run loads: actor, critics, targets, log α
        self.exported = nn.ModuleDict({"actor": self.policy["actor"], "sac_loss": self.sac_loss})
        if pretrained is not None:
            load_policy(pretrained, self.exported, scenario.describe())
        self.teacher = self._teacher_actor(teacher)
        self.retention = attach_methods(retention or [], self.policy, (teacher or pretrained) is not None)
        self.evaluator = SubspaceEvaluator(eval_episodes, eval_seed, eval_deterministic)
        self.buffer = self._make_buffer()
        self.register_buffer("env_frames", torch.tensor(0, dtype=torch.long))
        self.register_buffer("nonfinite_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("next_loglik_at", torch.tensor(0, dtype=torch.long))
        self.register_buffer("warmup_cloned", torch.tensor(False))
        self._context: RetentionContext | None = None
        self._loglik_states: TensorDictBase | None = None

    def _teacher_actor(self, path: str | None):
        policy = self.exported
        if path is not None:
            policy = copy.deepcopy(self.exported)
            load_policy(path, policy, self.scenario.describe())
        return copy.deepcopy(policy["actor"]).requires_grad_(False)

    def _make_buffer(self) -> TensorDictReplayBuffer:
        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(self.hparams.buffer_size),
            writer=KeepFirstWriter(),
            batch_size=self.hparams.batch_size,
        )

    @property
    def method_name(self) -> str:
        hp = self.hparams
        return methods_label(list(self.retention), hp.pretrained is not None, hp.teacher is not None)

    # --- data -----------------------------------------------------------------------------------
    def train_dataloader(self) -> Iterator[TensorDictBase]:
        """Collected batches until the frame budget is spent (no length: Lightning stops when the
        budget is, also on resume)."""
        hp = self.hparams
        handed_out = int(self.env_frames)
        if handed_out >= hp.budget_frames:
            return
        frames_per_batch = hp.num_envs * hp.rollout_length
        remaining = hp.budget_frames - handed_out
        random_frames = max(0, hp.start_steps - handed_out)
        seed = hp.seed + 1000 * self._rank()[0] + handed_out % 997
        env = self.scenario.make_env(hp.num_envs, hp.train_start, seed, training=True)
        policy, warmup_frames = (
            self.policy["actor"],
            math.ceil(random_frames / frames_per_batch) * frames_per_batch,
        )
        if hp.warmup == "scripted" and warmup_frames:
            policy = _Switch(self.scenario.scripted_policy(hp.warmup_noise, seed), policy, warmup_frames)
            warmup_frames = 0
        collector = Collector(
            env,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=max(1, math.ceil(remaining / frames_per_batch)) * frames_per_batch,
            init_random_frames=warmup_frames,
            policy_device=self.device,
            storing_device=self.device,
            exploration_type=ExplorationType.RANDOM,
        )
        try:
            for batch in collector:
                handed_out += batch.numel()
                yield batch
                if handed_out >= hp.budget_frames:
                    return
        finally:
            collector.shutdown()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, TensorDictBase) else batch

    def val_dataloader(self) -> list[str]:
        if self.trainer.state.fn != "validate":
            return []
        return list(self.scenario.subspaces)

    def validation_step(self, subspace: str, batch_idx: int) -> None:
        metrics = self.evaluator.evaluate(self.scenario, self.policy["actor"], subspace)
        for name, value in metrics.items():
            self.log(f"eval/{subspace}/{name}", float(value), batch_size=1)

    def _rank(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    # --- lifecycle --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._context = RetentionContext(
            actor=self.policy["actor"],
            teacher=self.teacher,
            behaviour=self.policy.behaviour_parameters(),
            pretraining_states=self._pretraining_states,
        )
        fresh = len(self.buffer) == 0
        for method in self.retention.values():
            method.prepare(self._context)
            method.on_env_frames(int(self.env_frames))
        for method in self.retention.values():
            memory = getattr(method, "replay_memory", None)
            transitions = memory() if memory is not None else None
            if fresh and transitions is not None:
                self.buffer.extend(transitions.select(*TRANSITION_KEYS).to(self.device))
                self.buffer.writer.keep(len(self.buffer))

    def on_train_start(self) -> None:
        self._maybe_loglik()

    def _pretraining_states(self, n: int) -> TensorDictBase:
        """``n`` of π*'s replay transitions (the scenario's ``pretraining_states``)."""
        if not hasattr(self, "_state_source"):
            rank, _ = self._rank()
            source = self.scenario.pretraining_states(self.hparams.seed + 1000 * rank)
            if source is None:
                raise ValueError("the scenario has no π* replay data (pretraining_buffer) for BC, EWC or EM")
            self._state_source = source
        return self._state_source(n).to(self.device)

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
        hp = self.hparams
        if not hp.export_policy or not self.trainer.is_global_zero:
            return
        save_policy(hp.export_policy, self.exported, self.scenario.describe())
        size = min(len(self.buffer), hp.export_transitions)
        if size:
            atomic_torch_save(
                {"size": size, "transitions": self.latest_transitions(size).to_dict()},
                exported_buffer_path(hp.export_policy),
            )

    def latest_transitions(self, n: int) -> TensorDictBase:
        """The ``n`` most recently written transitions of the buffer, oldest first."""
        writer, size = self.buffer.writer, len(self.buffer)
        ring = torch.arange(writer.kept, size)
        order = torch.cat([ring[ring >= writer._cursor], ring[ring < writer._cursor]])
        return self.buffer.storage[order[-n:]]

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        lr = self.hparams.lr
        groups = [
            {"params": list(self.policy.behaviour_parameters().values()), "lr": lr},
            {"params": list(self.sac_loss.qvalue_network_params.values(True, True)), "lr": lr},
            {"params": [self.sac_loss.log_alpha], "lr": lr},
        ]
        return torch.optim.Adam(groups)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        hp = self.hparams
        frames = batch.numel()
        self.env_frames += frames
        for method in self.retention.values():
            method.on_env_frames(int(self.env_frames))
        self.buffer.extend(batch.reshape(-1).select(*TRANSITION_KEYS))
        terms: dict[str, list[torch.Tensor]] = {}
        if hp.warmup_bc_updates and not bool(self.warmup_cloned) and int(self.env_frames) >= hp.start_steps:
            self._clone_warmup(terms)
        if int(self.env_frames) >= hp.learning_starts and len(self.buffer) >= hp.batch_size:
            for _ in range(max(1, round(frames * hp.updates_per_frame))):
                self._update(self.buffer.sample(), terms)
        self._log_step(batch, terms)
        self._maybe_loglik()

    def _clone_warmup(self, terms: dict) -> None:
        """Maximum-likelihood behavioural cloning of the warm-up transitions into the actor:
        − E_{(s,a)∼buffer} log π_θ(a|s) under the tanh-Gaussian, one Adam step per batch."""
        optimizer = self.optimizers()
        for _ in range(self.hparams.warmup_bc_updates):
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
        for name, method in self.retention.items():
            value = method.loss(self._context, sample)
            if value is not None:
                losses[f"loss_{name}"] = value
        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            self.nonfinite_updates += 1
            return
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()
        self.target_update.step()
        for method in self.retention.values():
            method.after_optimizer_step()
        losses["alpha"], losses["entropy"] = out["alpha"], out["entropy"]
        for key, value in losses.items():
            terms.setdefault(key, []).append(torch.as_tensor(value).detach())

    def _log_step(self, batch: TensorDictBase, terms: dict) -> None:
        metrics = {f"train/{k}": torch.stack(v).mean() for k, v in terms.items()}
        for name, method in self.retention.items():
            metrics[f"train/coef_{name}"] = method.coef.clone()
        for subspace, share in self.scenario.visitation(batch).items():
            metrics[f"train/visit/{subspace}"] = share
        metrics["train/env_frames"] = float(self.env_frames)
        metrics["train/buffer_size"] = float(len(self.buffer))
        metrics["train/nonfinite_updates"] = float(self.nonfinite_updates)
        self.log_dict(metrics, on_step=True, batch_size=1, sync_dist=self._rank()[1] > 1)

    # --- π*'s push-wall trajectories under the current policy -------------------------------------
    def _maybe_loglik(self) -> None:
        """Every ``loglik_every_frames``: log π_θ(a|s) on π*'s own push-wall transitions (their mean
        as ``eval/push_wall/pi_star_loglik``; the whole vector to ``<run>/loglik/<frames>.pt`` for
        the PCA over training, paper §5b). Rank 0 only; needs π*'s replay file."""
        every = self.hparams.loglik_every_frames
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
            from_file = torch.load(path, map_location="cpu", weights_only=True)
            data = TensorDict(from_file["transitions"], batch_size=[from_file["size"]])
            data = data[data["stage"] == PUSH_WALL_STAGE]
            self._loglik_states = data[-self.hparams.loglik_transitions :].to(self.device)
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
