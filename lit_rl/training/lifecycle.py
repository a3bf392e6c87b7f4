"""The fine-tuning lifecycle every trainer shares, as one LightningModule base class.

``FineTuning`` owns what does not depend on the learning algorithm:

- π*: the start point loaded from ``pretrained`` and the frozen teacher (``teacher``, or π* itself);
- the retention methods: attached to the policy's parameter roles, prepared once from π* and its
  data (rank 0 prepares, DDP ranks receive the state), their schedules advanced by env frames,
  their terms added to the algorithm's losses;
- the collector as the training dataloader: batches until the frame budget is spent, rebuilt after
  simulator faults (counted, up to ``budget.max_simulator_restarts``);
- one optimiser step on a sum of loss terms, with the non-finite guard;
- the evaluator (``SubspaceEvaluator``) for training-time evaluation and ``lit-rl validate``;
- logging of the shared metrics, the run's method name, and the export of π* at the end of fit.

An algorithm subclasses it and writes only what is its own (README, "Adding an algorithm"):

- ``build_learner()``: its losses and networks beside the policy (called before π* is loaded);
- ``exported``: what a π* file holds (default: the policy);
- ``make_collector(remaining_frames)``: how a batch is collected;
- ``learn(batch, terms)``: the update on one collected batch;
- ``configure_optimizers()``: its optimiser over the parameter roles;
- optionally ``drop_batch`` / ``after_batch`` (collection-side bookkeeping), ``extra_metrics``,
  ``on_fit_start`` / ``on_fit_end`` additions (call ``super()``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from lightning import Callback, LightningModule
from tensordict import TensorDictBase
from torch import nn

from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.retention import RetentionContext, RetentionMethod
from lit_rl.retention.base import attach_methods
from lit_rl.scenarios.base import Scenario
from lit_rl.training.pretraining_data import (
    DatasetStates,
    Prefetched,
    RolloutSequences,
    TeacherRolloutStates,
)
from lit_rl.training.rank_faults import nonfinite_ranks
from lit_rl.training.run_identity import methods_label
from lit_rl.training.settings import Budget, Collection, Evaluation, Export, record_settings, settings

#: errors a dying simulator raises through a collector: a crashed in-process env, or a worker
#: process whose pipe broke
SIMULATOR_FAULTS = (RuntimeError, EOFError, BrokenPipeError, ConnectionError, OSError)
#: [rows, steps] of the dataset chunks that flat pre-training states (EWC's Fisher) are read from
STATE_CHUNK = (16, 32)


class StreamCloser(Callback):
    """Closes the trainer's read-ahead streams when an exception ends a fit."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        pl_module._close_streams()


class FineTuning(LightningModule):
    """Fine-tuning of a pre-trained policy with any combination of retention methods.

    Args:
        scenario: the environment family and its CLOSE/FAR subspaces.
        pretrained: π* exported by pre-training; it is both the start point and the teacher.
            ``None`` trains from scratch (that is how RL pre-training runs).
        teacher: the π* retention methods read when it is not the start point (the paper's
            Table 5: a randomly initialised student kickstarted or BC-regularised towards π*);
            default: ``pretrained``.
        seed: base seed of the training environments (each DDP rank adds its rank).
        collection, budget, evaluation, export: the shared settings groups
            (``lit_rl.training.settings``).
        retention: the retention methods (``configs/method/*.yaml`` append to this list); none is
            plain fine-tuning.
    """

    def __init__(
        self,
        scenario: Scenario,
        pretrained: str | None,
        teacher: str | None,
        seed: int,
        collection: Collection,
        budget: Budget,
        evaluation: Evaluation,
        export: Export,
        retention: list[RetentionMethod] | None,
    ):
        super().__init__()
        collection, budget = settings(Collection, collection), settings(Budget, budget)
        evaluation, export = settings(Evaluation, evaluation), settings(Export, export)
        scenario.check_start(collection.start)
        self.save_hyperparameters(ignore=["retention"])
        record_settings(self)
        self.automatic_optimization = False
        self.scenario = scenario
        self.collection, self.budget = collection, budget
        self.evaluation, self.export = evaluation, export
        self.policy = scenario.make_policy().modules()
        self.retention = attach_methods(retention or [], self.policy, (teacher or pretrained) is not None)
        self.build_learner()
        if pretrained is not None:
            load_policy(pretrained, self.exported, scenario.describe())
        self.teacher = self._teacher_actor(teacher)
        self.evaluator = SubspaceEvaluator.from_settings(evaluation)
        self.register_buffer("env_frames", torch.tensor(0, dtype=torch.long))
        self.register_buffer("nonfinite_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("simulator_restarts", torch.tensor(0, dtype=torch.long))
        # (collector, its policy) while one runs; a tuple, so the policy wrapper is not registered
        # as a submodule (its weights are the policy's, and checkpoints must not list them twice)
        self._running: tuple | None = None
        self._consecutive_nonfinite = 0
        self._context: RetentionContext | None = None

    # --- what an algorithm writes ---------------------------------------------------------------
    def build_learner(self) -> None:
        """Build the algorithm's losses and networks beside ``self.policy`` and the attached
        ``self.retention`` (before π* loads into ``exported``)."""

    @property
    def exported(self) -> nn.Module:
        """What a π* file holds and a fine-tuning run loads (default: the actor-critic)."""
        return self.policy

    def make_collector(self, remaining_frames: int):
        """A TorchRL collector for ``remaining_frames`` frames; returns (collector, its policy)."""
        raise NotImplementedError

    def learn(self, batch: TensorDictBase, terms: dict[str, list[torch.Tensor]]) -> None:
        """The algorithm's update on one collected batch; loss values go into ``terms``."""
        raise NotImplementedError

    def drop_batch(self, batch: TensorDictBase) -> bool:
        """Whether a collected batch is skipped (not trained on, not counted in the budget)."""
        return False

    def after_batch(self, collector, policy) -> None:
        """Called after each batch is handed to the learner (e.g. a weight sync)."""

    def extra_metrics(self, batch: TensorDictBase) -> dict[str, float]:
        """The algorithm's own ``train/`` metrics, logged with the shared ones."""
        return {}

    # --- π* --------------------------------------------------------------------------------------
    def _teacher_actor(self, path: str | None):
        """A frozen copy of π*'s actor: the start point's, or the one in ``teacher``."""
        policy = self.exported
        if path is not None:
            policy = copy.deepcopy(policy)
            load_policy(path, policy, self.scenario.describe())
        teacher = copy.deepcopy(policy["actor"]).requires_grad_(False)
        for module in teacher.modules():  # π* must not read (or write) the student's carried outputs
            if hasattr(module, "carries_outputs"):
                module.carries_outputs = False
        return teacher

    @property
    def method_name(self) -> str:
        """``none`` for plain fine-tuning, ``pretrain`` when making π*, else the active methods in
        canonical order joined by ``+`` (the run folder's rule)."""
        hp = self.hparams
        return methods_label(list(self.retention), hp.pretrained is not None, hp.teacher is not None)

    # --- data -----------------------------------------------------------------------------------
    def train_dataloader(self) -> Iterator[TensorDictBase]:
        """Batches from the algorithm's collector until the frame budget is spent.

        It has no length, so Lightning ends the epoch when the budget is spent instead of counting
        batches (which a resumed run, with fewer frames left, would get wrong). A simulator fault
        while collecting rebuilds the collector and the run goes on; each restart is counted and
        logged (``train/simulator_restarts``) up to ``budget.max_simulator_restarts``.

        TorchRL's process collectors set this process's torch thread count while they run and
        raise it on shutdown, which made an end-of-run evaluation after a 2-worker run ≈9× slower
        on 2 busy cores; the count this process had is restored after they shut down.
        """
        # Lightning fetches a batch ahead of training_step, so count the frames handed out here
        # rather than reading env_frames.
        handed_out, budget = int(self.env_frames), self.budget.frames
        threads = torch.get_num_threads()
        while handed_out < budget:
            collector, policy = self.make_collector(budget - handed_out)
            self._running = (collector, policy)
            try:
                for batch in collector:
                    if self.drop_batch(batch):
                        continue
                    handed_out += batch.numel()
                    yield batch
                    self.after_batch(collector, policy)
                    if handed_out >= budget:
                        return
                return
            except SIMULATOR_FAULTS as fault:
                self._count_restart(fault)
            finally:
                self._running = None
                collector.shutdown()
                torch.set_num_threads(threads)

    def _count_restart(self, fault: Exception) -> None:
        self.simulator_restarts += 1
        limit = self.budget.max_simulator_restarts
        if int(self.simulator_restarts) > limit:
            raise RuntimeError(
                f"the simulator failed {int(self.simulator_restarts)} times (last: {fault}); "
                "the last checkpoint is intact: fix the environment and resume with RESUME=1"
            ) from fault
        warnings.warn(f"simulator fault ({fault!r}): restarting the collector", stacklevel=2)

    def _env_seed(self) -> int:
        """Distinct per rank and per resume, so restarted runs do not replay the same episodes."""
        return self.hparams.seed + 1000 * self._rank()[0] + int(self.env_frames) % 997

    def _rank(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, TensorDictBase) else batch

    # --- evaluation (``lit-rl validate``) --------------------------------------------------------
    def val_dataloader(self) -> list[str]:
        """For ``lit-rl validate`` (``make eval``): one "batch" per subspace; none during fit,
        where the ``SubspaceEvaluation`` callback evaluates on a frame schedule instead."""
        if self.trainer.state.fn != "validate":
            return []
        return list(self.scenario.subspaces)

    def validation_step(self, subspace: str, batch_idx: int) -> None:
        metrics = self.evaluator.evaluate(self.scenario, self.policy["actor"], subspace)
        for name, value in metrics.items():
            self.log(f"eval/{subspace}/{name}", float(value), batch_size=1)

    # --- retention lifecycle ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._context = RetentionContext(
            actor=self.policy["actor"],
            teacher=self.teacher,
            behaviour=self.policy.behaviour_parameters(),
            pretraining_states=self._pretraining_states,
            pretraining_sequences=self._pretraining_sequences if self._recurrent else None,
        )
        for method in self.retention.values():
            self._prepare_once(method)
            method.on_env_frames(int(self.env_frames))

    def _prepare_once(self, method) -> None:
        """Rank 0 prepares a method (Fisher, θ*, …); under DDP the other ranks receive its state."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            method.prepare(self._context)
            return
        if trainer.is_global_zero:
            method.prepare(self._context)
        method.load_state_dict(trainer.strategy.broadcast(method.state_dict(), src=0))

    @property
    def _recurrent(self) -> bool:
        return getattr(self.scenario, "recurrent", False)

    def _pretraining_states(self, n: int) -> TensorDictBase:
        """Flat pre-training states: the scenario's dataset (annotated with π*'s LSTM states when
        a recurrent scenario has one), else π*'s own rollouts; under DDP each rank draws its own
        shard."""
        if not hasattr(self, "_state_source"):
            seed = self.hparams.seed
            rank, world = self._rank()
            if self._recurrent:  # a stream of its own, seeded apart from BC's
                rows, steps = STATE_CHUNK
                chunks = self.scenario.pretraining_sequences(rows, steps, seed + 1, rank, world)
                source = (
                    None if chunks is None else DatasetStates(chunks, self.teacher, seed=seed + 1000 * rank)
                )
            else:
                source = self.scenario.pretraining_states(seed + 1000 * rank)
            if source is None:
                source = TeacherRolloutStates(
                    self.scenario, self.teacher, self.collection.teacher_frames,
                    self.collection.num_envs, seed + 1000 * rank,
                )  # fmt: skip
            self._state_source = source
        return self._state_source(n).to(self.device)

    def _pretraining_sequences(self, rows: int, seq_length: int) -> TensorDictBase:
        """The next chunk of pre-training sequences (recurrent BC replay): the scenario's dataset,
        read ahead in a background thread so the learner does not wait for it to be decoded, or
        π*'s stored rollouts (in memory) when it has none."""
        if not hasattr(self, "_sequence_source"):
            seed = self.hparams.seed
            rank, world = self._rank()
            source = self.scenario.pretraining_sequences(rows, seq_length, seed, rank, world)
            if source is not None:
                source = Prefetched(source, name="lit_rl-bc-dataset")
            else:
                source = RolloutSequences(
                    self.scenario, self.teacher, self.collection.teacher_frames, rows, seq_length,
                    seed + 1000 * rank,
                )  # fmt: skip
            self._sequence_source = source
        return next(self._sequence_source).to(self.device)

    def _close_streams(self) -> None:
        """Stop the dataset's read-ahead thread: at the end of fit (``teardown``) or when an
        exception leaves it (``StreamCloser``: Lightning calls no module hook then)."""
        source = self.__dict__.pop("_sequence_source", None)
        if isinstance(source, Prefetched):
            source.close()

    def teardown(self, stage: str) -> None:
        self._close_streams()

    def configure_callbacks(self) -> list[Callback]:
        return [StreamCloser()]

    def on_fit_end(self) -> None:
        if self.export.policy and self.trainer.is_global_zero:
            save_policy(self.export.policy, self.exported, self.scenario.describe())

    # --- the step ---------------------------------------------------------------------------------
    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        self.env_frames += batch.numel()
        for method in self.retention.values():
            method.on_env_frames(int(self.env_frames))
        terms: dict[str, list[torch.Tensor]] = {}
        self.learn(batch, terms)
        self._log_step(batch, terms)

    def retention_losses(self, minibatch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Every active retention term on a minibatch: L = L_RL + Σ_m L_m(θ) (paper §2)."""
        losses = {}
        for name, method in self.retention.items():
            value = method.loss(self._context, minibatch)
            if value is not None:
                losses[f"loss_{name}"] = value
        return losses

    def optimise(
        self, losses: dict[str, torch.Tensor], terms: dict, max_grad_norm: float | None = None
    ) -> bool:
        """One optimiser step on the sum of ``losses`` (skipped when it is not finite; training
        stops after ``budget.max_nonfinite_updates`` in a row). Returns whether it stepped."""
        total = torch.stack(list(losses.values())).sum()
        nonfinite = nonfinite_ranks(total, self._trainer)  # the same on every DDP rank
        if nonfinite:
            self._skip_nonfinite(total, nonfinite)
            return False
        self._consecutive_nonfinite = 0
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        if max_grad_norm:
            self.clip_gradients(optimizer, max_grad_norm, "norm")
        optimizer.step()
        for method in self.retention.values():
            method.after_optimizer_step()
        for key, value in losses.items():
            terms.setdefault(key, []).append(torch.as_tensor(value).detach())
        return True

    def _skip_nonfinite(self, total: torch.Tensor, ranks: list[int]) -> None:
        self.nonfinite_updates += 1
        self._consecutive_nonfinite += 1
        if self._consecutive_nonfinite >= self.budget.max_nonfinite_updates:
            distributed = self._trainer is not None and self._trainer.world_size > 1
            where = f"on rank {', '.join(map(str, ranks))}" if distributed else f"({total.item()})"
            raise FloatingPointError(
                f"{self._consecutive_nonfinite} consecutive non-finite losses {where}: "
                "lower the learning rate or check the reward scale; resume from the last checkpoint"
            )

    def _log_step(self, batch: TensorDictBase, terms: dict) -> None:
        metrics = {f"train/{k}": torch.stack(v).mean() for k, v in terms.items()}
        for name, method in self.retention.items():
            metrics[f"train/coef_{name}"] = method.coef.clone()
        for subspace, share in self.scenario.visitation(batch).items():
            metrics[f"train/visit/{subspace}"] = share
        metrics["train/env_frames"] = float(self.env_frames)
        metrics["train/nonfinite_updates"] = float(self.nonfinite_updates)
        metrics["train/simulator_restarts"] = float(self.simulator_restarts)
        metrics.update(self.extra_metrics(batch))
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self.log_dict(metrics, on_step=True, batch_size=1, sync_dist=distributed)
