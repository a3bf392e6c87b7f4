"""Actor-critic fine-tuning with retention losses, as one LightningModule.

A TorchRL collector is the training dataloader: each batch is a [envs, time] TensorDict of fresh
rollouts, collected while the learner waits (``collection: sync``) or by collector processes that
keep stepping the environments with the last weights they received while the learner trains on the
previous batch (``collection: async``; TorchRL's asynchronous multi-process collector). Every frame
is stamped with the version of the weights that acted (``policy_version``: learner batches applied),
so the policy lag is logged (``time/policy_lag``); PPO's clipped ratio against the stored
behaviour log-probabilities keeps the update sound under that lag.

``training_step`` computes GAE (from the values the collection pass stored), then runs PPO epochs
over minibatches with manual optimisation, adding every active retention term to TorchRL's clipped
PPO loss:

    L = L_PPO(θ) + Σ_m L_m(θ)            (paper §2; the critic is never regularised)

The budget is counted in environment frames, not optimiser steps. The same module pre-trains π*
(no ``pretrained`` checkpoint, episodes starting in FAR) and exports it for fine-tuning.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from typing import Literal

import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from lightning import Callback, LightningModule
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.objectives.value import GAE

from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.retention import RetentionContext, RetentionMethod
from lit_rl.retention.base import attach_methods
from lit_rl.scenarios.base import Scenario
from lit_rl.training.ppo_loss import entropy_coef_in_use, make_ppo_loss, shared_trunk_critic
from lit_rl.training.pretraining_data import (
    DatasetStates,
    Prefetched,
    RolloutSequences,
    TeacherRolloutStates,
)
from lit_rl.training.run_identity import methods_label
from lit_rl.training.vtrace import BehaviourVTrace

#: state-dict prefix of the return normaliser (present only with ``normalize_returns``)
VALUE_NORM_PREFIX = "ppo_loss.value_norm."
#: [rows, steps] of the dataset chunks that flat pre-training states (EWC's Fisher) are read from
STATE_CHUNK = (16, 32)
#: errors a dying simulator raises through a collector: a crashed in-process env, or a worker
#: process whose pipe broke
SIMULATOR_FAULTS = (RuntimeError, EOFError, BrokenPipeError, ConnectionError, OSError)


class TrainingEnvFactory:
    """Builds one collector worker's training environments in its own process (picklable), with
    one torch thread so workers do not oversubscribe the cores."""

    def __init__(self, scenario: Scenario, num_envs: int, start: str, seed: int, teacher_state: bool):
        self.scenario, self.num_envs, self.start, self.seed = scenario, num_envs, start, seed
        self.teacher_state = teacher_state

    def __call__(self):
        torch.set_num_threads(1)
        env = self.scenario.make_env(self.num_envs, self.start, self.seed, training=True)
        return self.scenario.add_teacher_state(env, self.num_envs) if self.teacher_state else env


class PolicyVersion(TensorDictModuleBase):
    """Stamps each collected frame with the version of the weights that acted (``policy_version``).

    The version is a buffer of the collection policy: it travels with the weights to collector
    processes, so a frame's stamp is the version its collector held when it acted, and the learner
    reads the lag of each batch as its own version minus the stamps. Not persistent: a resumed run
    counts afresh (the lag is a difference)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("version", torch.zeros((), dtype=torch.long), persistent=False)
        self.in_keys, self.out_keys = [], ["policy_version"]

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        td.set("policy_version", self.version.expand(td.shape).clone())
        return td


class StreamCloser(Callback):
    """Closes the trainer's read-ahead streams when an exception ends a fit."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        pl_module._close_streams()


class PPOFineTuning(LightningModule):
    """PPO fine-tuning of a pre-trained policy, with any combination of retention methods.

    Args:
        scenario: the environment family and its CLOSE/FAR subspaces.
        pretrained: π* exported by pre-training; it is both the start point and the teacher.
            ``None`` trains from scratch (that is how pre-training runs).
        teacher: the π* retention methods read when it is not the start point (the paper's
            Table 5: a randomly initialised student kickstarted or BC-regularised towards π*);
            default: ``pretrained``.
        train_start: subspace the training episodes start in (``close`` for fine-tuning).
        budget_frames: environment frames to train for.
        num_envs, rollout_length: one batch is ``num_envs × rollout_length`` frames.
        collector_workers: processes that step the environments (each ``num_envs / workers`` of
            them, TorchRL's process collectors with the policy's weights sent after every batch);
            1 steps them in the training process (``sync``) or in one collector process (``async``).
        collection: ``sync`` collects each batch while the learner waits (TorchRL's synchronous
            collectors: the exact-reproduction mode; Lightning's one-batch prefetch makes the lag
            at most 1 batch). ``async`` uses TorchRL's ``MultiAsyncCollector``: each worker keeps
            one batch of ``num_envs / workers`` envs × ``rollout_length`` in flight, started with
            the newest weights as soon as the learner took its previous one, so stepping and
            learning overlap on separate cores. With one worker the lag is at most 2 batches
            (its batch in flight and Lightning's prefetch); with more, a fast worker can deliver
            twice while a slow one is still on its batch, so ``max_policy_lag`` bounds it.
        max_policy_lag: async batches whose oldest frame would be more learner batches old than
            this when trained are dropped (not counted in the budget; ``train/dropped_batches``).
        seed: base seed of the training environments (each DDP rank adds its rank).
        lr, lr_decay: learning rate of the behaviour parameters, optionally decayed linearly to 0
            over the budget (torch's ``LinearLR``, stepped once per collected batch).
        critic_lr: learning rate of the value function's own parameters (default: ``lr``); SGD on
            the logistic actor wants a much larger step than the critic can take.
        optimizer: ``adam`` or ``sgd``.
        weight_decay: the optimiser's L2 weight decay (paper's NetHack table: 1e-4).
        gamma, gae_lambda: discount and GAE λ (TorchRL's ``GAE``).
        advantage: ``gae`` (TorchRL's GAE on the values stored at collection) or ``vtrace``
            (IMPALA's V-trace, ``lit_rl.training.vtrace``: targets and advantages corrected by the
            truncated importance weights π/μ of the stored behaviour log-probabilities μ). PPO's
            clipped ratio already keeps the *policy* update sound under lag; V-trace also corrects
            the *critic's* targets and the advantages, whose n-step returns GAE takes as if the
            current policy had acted. Use it with ``collection: async`` when the lag is large
            (several workers, a high ``max_policy_lag``); with no lag it equals GAE with λ = 1,
            and it costs one more actor replay per batch. It has no λ: ``gae_lambda`` must be 1.
        vtrace_rho_bar, vtrace_c_bar: V-trace's truncation levels ρ̄ and c̄ (IMPALA: 1 and 1).
        clip_epsilon, critic_coef, entropy_coef: TorchRL ``ClipPPOLoss`` settings.
        value_clip: clip radius of the value prediction around its collected value (paper's APPO:
            1.0); ``None`` for an unclipped critic loss.
        normalize_returns: compare critic predictions and value targets in units of a running
            mean/std of the returns (TorchRL ``RunningValueNorm``; paper's APPO: on), so the critic
            loss keeps one scale as scores grow; value clipping then applies in those units too.
        entropy_coef_with_retention: entropy coefficient used once any retention method is active
            (the paper switches the bonus off).
        ppo_epochs, minibatch_size, max_grad_norm: optimisation settings per batch.
        learning_starts_frames: collect this many frames before the first update (the paper's
            APPO waited 25M frames so its many environments desynchronise first).
        max_nonfinite_updates: consecutive non-finite losses tolerated before training stops.
        max_simulator_restarts: collector rebuilds after simulator faults before the run stops.
        pretraining_state_frames: how many π* rollout frames stand in for the pre-training data.
        eval_every_frames: evaluation period (read by the ``SubspaceEvaluation`` callback).
        eval_episodes, eval_seed, eval_deterministic: the one evaluation rule
            (``SubspaceEvaluator``) of training-time evaluation and ``lit-rl validate``.
        eval_background: the ``SubspaceEvaluation`` callback evaluates snapshots of the weights in
            a process of its own while training goes on (same numbers, logged at the snapshot's
            frames). Off by default: the worker costs a process start (seconds) and wants a core
            the learner and collectors leave free, which the 2-core CPU presets do not have;
            turn it on where a core or the GPU is free and evaluations are long (docs/throughput.md).
        export_policy: where to write the trained policy (pre-training's product, π*).
        retention: the retention methods (``configs/method/*.yaml`` append to this list); none is
            plain fine-tuning.
    """

    def __init__(
        self,
        scenario: Scenario,
        pretrained: str | None = None,
        teacher: str | None = None,
        train_start: str = "close",
        budget_frames: PositiveInt = 1_000_000,
        num_envs: PositiveInt = 64,
        rollout_length: PositiveInt = 100,
        collector_workers: PositiveInt = 1,
        collection: Literal["sync", "async"] = "sync",
        max_policy_lag: PositiveInt = 3,
        seed: int = 0,
        lr: PositiveFloat = 0.05,
        critic_lr: PositiveFloat | None = None,
        lr_decay: bool = False,
        optimizer: str = "adam",
        weight_decay: NonNegativeFloat = 0.0,
        gamma: ClosedUnitInterval = 1.0,
        gae_lambda: ClosedUnitInterval = 1.0,
        advantage: Literal["gae", "vtrace"] = "gae",
        vtrace_rho_bar: PositiveFloat = 1.0,
        vtrace_c_bar: PositiveFloat = 1.0,
        clip_epsilon: PositiveFloat = 0.2,
        value_clip: PositiveFloat | None = None,
        normalize_returns: bool = False,
        critic_coef: NonNegativeFloat = 0.5,
        entropy_coef: NonNegativeFloat = 0.0,
        entropy_coef_with_retention: NonNegativeFloat | None = 0.0,
        ppo_epochs: PositiveInt = 1,
        minibatch_size: PositiveInt = 6400,
        learning_starts_frames: NonNegativeInt = 0,
        max_grad_norm: PositiveFloat | None = None,
        max_nonfinite_updates: PositiveInt = 10,
        max_simulator_restarts: NonNegativeInt = 10,
        pretraining_state_frames: PositiveInt = 20_000,
        eval_every_frames: PositiveInt = 50_000,
        eval_episodes: PositiveInt = 256,
        eval_seed: int = 10_000,
        eval_deterministic: bool = False,
        eval_background: bool = False,
        export_policy: str | None = None,
        retention: list[RetentionMethod] | None = None,
    ):
        super().__init__()
        if collector_workers < 1 or num_envs % collector_workers:
            raise ValueError(
                f"collector_workers={collector_workers} must be >= 1 and divide num_envs={num_envs}"
            )
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {optimizer!r}: choose 'adam' or 'sgd'")
        if advantage not in ("gae", "vtrace"):
            raise ValueError(f"model.advantage={advantage!r} is unknown: choose 'gae' or 'vtrace'")
        if advantage == "vtrace" and gae_lambda != 1:
            raise ValueError(
                f"model.advantage=vtrace has no λ (TorchRL's V-trace is the λ=1 estimator), but "
                f"model.gae_lambda={gae_lambda}: set model.gae_lambda: 1.0 or use model.advantage: gae"
            )
        if advantage == "vtrace" and type(self).compute_advantage is not PPOFineTuning.compute_advantage:
            raise ValueError(
                f"model.advantage=vtrace is not available in {type(self).__name__}, whose advantages "
                "are its own: use model.advantage: gae"
            )
        scenario.check_start(train_start)
        self.save_hyperparameters(ignore=["retention"])
        self.automatic_optimization = False
        self.scenario = scenario
        self.policy = scenario.make_policy().modules()
        if pretrained is not None:
            load_policy(pretrained, self.policy, scenario.describe())
        self.teacher = self._teacher_actor(teacher)
        self.retention = attach_methods(retention or [], self.policy, (teacher or pretrained) is not None)
        self.evaluator = SubspaceEvaluator(eval_episodes, eval_seed, eval_deterministic)
        self.ppo_loss = make_ppo_loss(
            self.policy["actor"],
            shared_trunk_critic(self.policy["actor"], self.policy["critic"]),
            clip_epsilon=clip_epsilon,
            critic_coef=critic_coef,
            entropy_coef=self.entropy_coef,
            value_clip=value_clip,
            normalize_returns=normalize_returns,
        )
        # GAE over the critic re-run on every frame and next frame: for batches whose collector
        # stored no values; else the same TorchRL GAE reads the stored ones (compute_advantage)
        self.advantage = GAE(
            gamma=gamma, lmbda=gae_lambda, value_network=self.policy["critic"], average_gae=False
        )
        self.stored_value_advantage = GAE(
            gamma=gamma, lmbda=gae_lambda, value_network=None, average_gae=False
        )
        self.vtrace = BehaviourVTrace(
            gamma, vtrace_rho_bar, vtrace_c_bar, self.ppo_loss.tensor_keys.sample_log_prob
        )
        self._vtrace_clipped: float | None = None
        self.register_buffer("env_frames", torch.tensor(0, dtype=torch.long))
        self.register_buffer("nonfinite_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("simulator_restarts", torch.tensor(0, dtype=torch.long))
        self.policy_version = PolicyVersion()
        self.register_buffer("dropped_batches", torch.tensor(0, dtype=torch.long))
        # (collector, its policy) while one runs; a tuple, so the policy wrapper is not registered
        # as a submodule (its weights are the policy's, and checkpoints must not list them twice)
        self._running: tuple | None = None
        self._consecutive_nonfinite = 0
        self._context: RetentionContext | None = None

    def _teacher_actor(self, path: str | None):
        """A frozen copy of π*'s actor: the start point's, or the one in ``teacher``."""
        policy = self.policy
        if path is not None:
            policy = self.scenario.make_policy().modules()
            load_policy(path, policy, self.scenario.describe())
        teacher = copy.deepcopy(policy["actor"]).requires_grad_(False)
        for module in teacher.modules():  # π* must not read (or write) the student's carried outputs
            if hasattr(module, "carries_outputs"):
                module.carries_outputs = False
        return teacher

    @property
    def entropy_coef(self) -> float:
        hp = self.hparams
        return entropy_coef_in_use(hp.entropy_coef, hp.entropy_coef_with_retention, bool(self.retention))

    @property
    def method_name(self) -> str:
        """``none`` for plain fine-tuning, ``pretrain`` when making π*, else the active methods in
        canonical order joined by ``+`` (the run folder's rule)."""
        hp = self.hparams
        return methods_label(list(self.retention), hp.pretrained is not None, hp.teacher is not None)

    @property
    def _teacher_logits_wanted(self) -> bool:
        return any(method.needs_teacher_logits for method in self.retention.values())

    # --- data -----------------------------------------------------------------------------------
    def train_dataloader(self) -> Iterator[TensorDictBase]:
        """Batches from a TorchRL collector until the frame budget is spent.

        It has no length, so Lightning ends the epoch when the budget is spent instead of counting
        batches (which a resumed run, with fewer frames left, would get wrong). A simulator fault
        while collecting rebuilds the collector and the run goes on; each restart is counted and
        logged (``train/simulator_restarts``) up to ``max_simulator_restarts``.

        TorchRL's process collectors set this process's torch thread count while they run and
        raise it on shutdown (by their worker count, up to the count torch started with), which
        made an end-of-run evaluation after a 2-worker run ≈9× slower on 2 busy cores; the count
        this process had is kept while they run and restored after they shut down.
        """
        # Lightning fetches a batch ahead of training_step, so count the frames handed out here
        # rather than reading env_frames.
        handed_out = int(self.env_frames)
        threads = torch.get_num_threads()
        while handed_out < self.hparams.budget_frames:
            policy = self._collection_policy()
            collector = self._make_collector(self.hparams.budget_frames - handed_out, policy)
            self._running = (collector, policy)
            try:
                for batch in collector:
                    if self._too_stale(batch):
                        self.dropped_batches += 1
                        continue
                    handed_out += batch.numel()
                    yield batch
                    if self._collects_in_processes and self.hparams.collection == "sync":
                        collector.update_policy_weights_(policy)
                    if handed_out >= self.hparams.budget_frames:
                        return
                return
            except SIMULATOR_FAULTS as fault:
                self._count_restart(fault)
            finally:
                self._running = None
                collector.shutdown()
                torch.set_num_threads(threads)

    def _too_stale(self, batch: TensorDictBase) -> bool:
        """Whether an async batch's oldest frame would exceed ``max_policy_lag`` when trained:
        Lightning trains it after the batch it fetched before, so one more update lands first."""
        if self.hparams.collection != "async":
            return False
        oldest = int(batch["policy_version"].min())
        return int(self.policy_version.version) + 1 - oldest > self.hparams.max_policy_lag

    @property
    def _collects_in_processes(self) -> bool:
        return self.hparams.collector_workers > 1 or self.hparams.collection == "async"

    @property
    def frames_per_batch(self) -> int:
        """Frames in one training batch: all envs × ``rollout_length``, or one async worker's
        share of the envs (each async batch comes from one worker)."""
        hp = self.hparams
        frames = hp.num_envs * hp.rollout_length
        return frames // hp.collector_workers if hp.collection == "async" else frames

    def _make_collector(self, remaining: int, policy) -> Collector:
        """The collector for ``remaining`` frames: in this process (sync, one worker), TorchRL's
        synchronous multi-process collector with the workers' envs side by side (sync), or its
        asynchronous one (``MultiAsyncCollector``: each batch is one worker's [envs, time])."""
        hp = self.hparams
        frames_per_batch = self.frames_per_batch
        batches = max(1, math.ceil(remaining / frames_per_batch))
        settings = dict(
            frames_per_batch=frames_per_batch,
            # async: endless, since dropped batches do not count (the loader stops at the budget)
            total_frames=-1 if hp.collection == "async" else batches * frames_per_batch,
            policy_device=self.device,
            storing_device=self.device,
            auto_register_policy_transforms=False,
        )
        workers, seed, ks = hp.collector_workers, self._env_seed(), self._teacher_logits_wanted
        if not self._collects_in_processes:
            env = self.scenario.make_env(hp.num_envs, hp.train_start, seed, training=True)
            env = self.scenario.add_teacher_state(env, hp.num_envs) if ks else env
            return Collector(env, policy, **settings)
        per_worker = hp.num_envs // workers
        makers = [
            TrainingEnvFactory(self.scenario, per_worker, hp.train_start, seed + 97 * worker, ks)
            for worker in range(workers)
        ]
        # this process keeps its own thread count (TorchRL would set it to cores − workers)
        settings["num_threads"] = torch.get_num_threads()
        if hp.collection == "async":
            return Collector(makers, policy, backend="process", num_collectors=workers, sync=False,
                             use_buffers=True, **settings)  # fmt: skip
        # workers' envs side by side ([envs, time]), so every row stays one environment's trajectory
        return Collector(
            makers, policy, backend="process", num_collectors=workers, sync=True, cat_results=0,
            use_buffers=True, **settings,
        )  # fmt: skip

    def _collection_policy(self):
        """The actor; with kickstarting, followed by π* writing ``teacher_logits`` for every frame
        from its own recurrent state, which the KS loss reads; then the weights' version stamp."""
        modules = [self.policy["actor"]]
        if self._teacher_logits_wanted:
            probe = self.scenario.teacher_probe(self.teacher)
            share = getattr(probe, "share_features_of", None)
            if share is not None:  # π* reads the student's fixed features where they are equal
                share(self.policy["actor"].module[0])
            modules.append(probe)
        return TensorDictSequential(*modules, self.policy_version)

    def _count_restart(self, fault: Exception) -> None:
        self.simulator_restarts += 1
        limit = self.hparams.max_simulator_restarts
        if int(self.simulator_restarts) > limit:
            raise RuntimeError(
                f"the simulator failed {int(self.simulator_restarts)} times (last: {fault}); "
                "the last checkpoint is intact: fix the environment and resume with RESUME=1"
            ) from fault
        warnings.warn(f"simulator fault ({fault!r}): restarting the collector", stacklevel=2)

    def _env_seed(self) -> int:
        """Distinct per rank and per resume, so restarted runs do not replay the same episodes."""
        return self.hparams.seed + 1000 * self._rank()[0] + int(self.env_frames) % 997

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, TensorDictBase) else batch

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

    # --- lifecycle --------------------------------------------------------------------------------
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

    def _rank(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _pretraining_states(self, n: int) -> TensorDictBase:
        """Flat pre-training states: the scenario's dataset annotated with π*'s LSTM states when a
        recurrent scenario has one, else π*'s rollouts; under DDP each rank draws its own shard."""
        if not hasattr(self, "_state_source"):
            hp = self.hparams
            rank, world = self._rank()
            chunks, dataset = None, None
            if self._recurrent:  # a stream of its own, seeded apart from BC's
                rows, steps = STATE_CHUNK
                chunks = self.scenario.pretraining_sequences(rows, steps, hp.seed + 1, rank, world)
            else:
                dataset = self.scenario.pretraining_states(hp.seed + 1000 * rank)
            if chunks is not None:
                self._state_source = DatasetStates(chunks, self.teacher, seed=hp.seed + 1000 * rank)
            elif dataset is not None:
                self._state_source = dataset
            else:
                frames, seed = hp.pretraining_state_frames, hp.seed + 1000 * rank
                self._state_source = TeacherRolloutStates(
                    self.scenario, self.teacher, frames, hp.num_envs, seed
                )
        return self._state_source(n).to(self.device)

    def _pretraining_sequences(self, rows: int, seq_length: int) -> TensorDictBase:
        """The next chunk of pre-training sequences (recurrent BC replay): the scenario's dataset,
        read ahead in a background thread so the learner does not wait for it to be decoded, or
        π*'s stored rollouts (in memory) when it has none."""
        if not hasattr(self, "_sequence_source"):
            hp = self.hparams
            rank, world = self._rank()
            source = self.scenario.pretraining_sequences(rows, seq_length, hp.seed, rank, world)
            if source is not None:
                source = Prefetched(source, name="lit_rl-bc-dataset")
            else:
                source = RolloutSequences(
                    self.scenario, self.teacher, hp.pretraining_state_frames, rows, seq_length,
                    hp.seed + 1000 * rank,
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from runs with another ``normalize_returns`` setting still load: the return
        normaliser's statistics start fresh, or are dropped when normalisation is now off."""
        state = checkpoint["state_dict"]
        fresh = {k: v for k, v in self.state_dict().items() if k.startswith(VALUE_NORM_PREFIX)}
        for key in [k for k in state if k.startswith(VALUE_NORM_PREFIX) and k not in fresh]:
            del state[key]
        for key, value in fresh.items():
            state.setdefault(key, value)
        state.setdefault("dropped_batches", torch.tensor(0, dtype=torch.long))  # older checkpoints

    def on_fit_end(self) -> None:
        if self.hparams.export_policy and self.trainer.is_global_zero:
            save_policy(self.hparams.export_policy, self.policy, self.scenario.describe())

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        """One group for the behaviour parameters (``lr``), one for the value function's own
        (``critic_lr``); the scenario's fixed parameters are in neither. With ``lr_decay``, torch's
        ``LinearLR`` takes both to 0 over the budget's batches (checkpointed with the optimiser)."""
        hp = self.hparams
        groups = self.parameter_groups()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, eps=1e-7, weight_decay=hp.weight_decay)
        if not hp.lr_decay:
            return optimizer
        batches = max(1, math.ceil(hp.budget_frames / self.frames_per_batch))
        decay = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=batches)
        return {"optimizer": optimizer, "lr_scheduler": decay}

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups by parameter role (subclasses add their own networks' groups)."""
        hp = self.hparams
        return [
            {"params": list(self.policy.behaviour_parameters().values()), "lr": hp.lr},
            {"params": list(self.policy.value_parameters().values()), "lr": hp.critic_lr or hp.lr},
        ]

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        hp = self.hparams
        self._policy_lag = self._lag(batch)
        self.env_frames += batch.numel()
        for method in self.retention.values():
            method.on_env_frames(int(self.env_frames))
        terms: dict[str, list[torch.Tensor]] = {}
        if hp.lr_decay:
            self.lr_schedulers().step()  # one step per batch: lr = base · (1 − frames / budget)
        if int(self.env_frames) <= hp.learning_starts_frames:
            self._log_step(batch, terms)
            return
        with torch.no_grad():
            self.compute_advantage(batch)
        for _ in range(hp.ppo_epochs):
            for minibatch in self.minibatches(batch):
                self._update(minibatch, terms)
        self.policy_version.version += 1
        if self._running is not None and hp.collection == "async":
            # the workers start their next batch with these weights (the collector's weight sync)
            collector, policy = self._running
            collector.update_policy_weights_(policy)
        self._log_step(batch, terms)

    def _lag(self, batch: TensorDictBase) -> tuple[float, float] | None:
        """(mean, max) over the batch's frames of the learner batches applied since the weights
        that acted on them; ``None`` for batches without stamps."""
        stamps = batch.get("policy_version", None)
        if stamps is None:
            return None
        lag = (self.policy_version.version - stamps).float()
        return lag.mean().item(), lag.max().item()

    def compute_advantage(self, batch: TensorDictBase) -> None:
        """Write ``advantage`` and ``value_target`` into the [envs, time] batch (TorchRL GAE).

        When the collector's policy stored each frame's ``state_value`` (it computed it in the
        same pass as the action), GAE reads those: a frame's next value is the stored value of
        the row's following frame, and the critic runs only where that frame is not the true next
        state, i.e. after each row's last step and after truncations (time limits), where the
        bootstrap needs the value of the state the episode was cut at. Terminal steps need none.
        Otherwise the critic re-runs on every frame and next frame, as TorchRL's GAE does.
        With ``advantage: vtrace`` the same values feed V-trace instead (a collector that stored
        no values gets them from the critic first).
        """
        if self.hparams.get("advantage", "gae") == "vtrace":
            if "state_value" not in batch.keys():
                batch.set("state_value", self.policy["critic"](batch.copy())["state_value"])
            self._vtrace_clipped = self.vtrace(batch, self.policy["actor"], self._next_values(batch))
            return
        if "state_value" not in batch.keys():
            self.advantage(batch)
            return
        batch.set(("next", "state_value"), self._next_values(batch))
        self.stored_value_advantage(batch)

    def _next_values(self, batch: TensorDictBase) -> torch.Tensor:
        """V(s_{t+1}) for every frame of an [envs, time] batch from the stored values, plus the
        critic on the few next states no stored value covers (see ``compute_advantage``)."""
        value = batch["state_value"]
        next_value = torch.cat([value[:, 1:], torch.zeros_like(value[:, :1])], dim=1)
        terminated = batch["next", "terminated"]
        needed = batch["next", "done"] & ~terminated
        needed[:, -1] = ~terminated[:, -1]
        needed = needed.reshape(batch.shape)
        if needed.any():
            next_states = batch["next"][needed]
            next_value[needed] = self.policy["critic"](next_states)["state_value"].to(value.dtype)
        return next_value

    def minibatches(self, batch: TensorDictBase):
        """Shuffled minibatches of ``minibatch_size`` frames. Recurrent scenarios keep whole
        [time] rows together, so a sequence model can replay them from their stored start state."""
        size = self.hparams.minibatch_size
        if self._recurrent:
            rows = max(1, size // batch.shape[-1])
            for index in torch.randperm(batch.shape[0], device=batch.device).split(rows):
                yield batch[index]
            return
        flat = batch.reshape(-1)
        for index in torch.randperm(flat.numel(), device=flat.device).split(size):
            yield flat[index]

    def extra_losses(self, minibatch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Scenario-specific terms added to the objective (e.g. an RND predictor loss)."""
        return {}

    def _update(self, minibatch: TensorDictBase, terms: dict) -> None:
        ppo = self.ppo_loss(minibatch)
        losses = {k: v for k, v in ppo.items() if k.startswith("loss_")}
        losses.update(self.extra_losses(minibatch))
        for name, method in self.retention.items():
            value = method.loss(self._context, minibatch)
            if value is not None:
                losses[f"loss_{name}"] = value
        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            self._skip_nonfinite(total)
            return
        self._consecutive_nonfinite = 0
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        if self.hparams.max_grad_norm:
            self.clip_gradients(optimizer, self.hparams.max_grad_norm, "norm")
        optimizer.step()
        for method in self.retention.values():
            method.after_optimizer_step()
        for key, value in losses.items():
            terms.setdefault(key, []).append(value.detach())

    def _skip_nonfinite(self, total: torch.Tensor) -> None:
        self.nonfinite_updates += 1
        self._consecutive_nonfinite += 1
        if self._consecutive_nonfinite >= self.hparams.max_nonfinite_updates:
            raise FloatingPointError(
                f"{self._consecutive_nonfinite} consecutive non-finite losses ({total.item()}): "
                "lower model.lr or check the reward scale; resume from the last checkpoint"
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
        if self.hparams.collection == "async":
            metrics["train/dropped_batches"] = float(self.dropped_batches)
        if self._vtrace_clipped is not None:
            metrics["train/vtrace_clipped"] = self._vtrace_clipped
        if getattr(self, "_policy_lag", None) is not None:
            metrics["time/policy_lag"], metrics["time/policy_lag_max"] = self._policy_lag
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self.log_dict(metrics, on_step=True, batch_size=1, sync_dist=distributed)
