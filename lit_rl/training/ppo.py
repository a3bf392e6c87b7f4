"""PPO fine-tuning with retention losses: what is PPO's own on top of the shared ``FineTuning``.

How a batch is collected: a TorchRL collector steps the training environments while the learner
waits (``collection.mode: sync``), or collector processes keep stepping them with the last weights
they received while the learner trains on the previous batch (``async``; TorchRL's asynchronous
multi-process collector). Every frame is stamped with the version of the weights that acted
(``policy_version``: learner batches applied), so the policy lag is logged (``time/policy_lag``);
PPO's clipped ratio against the stored behaviour log-probabilities keeps the update sound under it.

The update: GAE (from the values the collection pass stored) or V-trace, then PPO epochs over
minibatches, adding every active retention term to TorchRL's clipped PPO loss:

    L = L_PPO(θ) + Σ_m L_m(θ)            (paper §2; the critic is never regularised)

The same module pre-trains π* (no ``pretrained`` checkpoint, episodes starting in FAR) and exports
it for fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.objectives.value import GAE

from lit_rl.retention import RetentionMethod
from lit_rl.scenarios.base import Scenario
from lit_rl.training.lifecycle import FineTuning
from lit_rl.training.ppo_loss import entropy_coef_in_use, make_ppo_loss, shared_trunk_critic
from lit_rl.training.settings import Budget, Collection, Evaluation, Export, settings
from lit_rl.training.vtrace import BehaviourVTrace

#: state-dict prefix of the return normaliser (present only with ``loss.normalize_returns``)
VALUE_NORM_PREFIX = "ppo_loss.value_norm."


@dataclass
class Optimisation:
    """PPO's optimiser and its passes over each batch.

    Attributes:
        optimizer: ``adam`` or ``sgd``.
        lr: learning rate of the behaviour parameters.
        critic_lr: learning rate of the value function's own parameters (default: ``lr``); SGD on
            the logistic actor wants a much larger step than the critic can take.
        lr_decay: decay both linearly to 0 over the budget (torch's ``LinearLR``, one step per
            collected batch).
        weight_decay: the optimiser's L2 weight decay (paper's NetHack table: 1e-4).
        max_grad_norm: gradient-norm clip (``None``: none).
        epochs, minibatch_size: PPO epochs per batch and frames per minibatch.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PositiveFloat = 0.05
    critic_lr: PositiveFloat | None = None
    lr_decay: bool = False
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: PositiveFloat | None = None
    epochs: PositiveInt = 1
    minibatch_size: PositiveInt = 6400


@dataclass
class Advantage:
    """How advantages and value targets are estimated.

    Attributes:
        estimator: ``gae`` (TorchRL's GAE on the values stored at collection) or ``vtrace``
            (IMPALA's V-trace, ``lit_rl.training.vtrace``: targets and advantages corrected by the
            truncated importance weights π/μ of the stored behaviour log-probabilities μ). PPO's
            clipped ratio already keeps the *policy* update sound under lag; V-trace also corrects
            the *critic's* targets and the advantages. Use it with ``collection.mode: async`` when
            the lag is large; with no lag it equals GAE with λ = 1. It has no λ: ``gae_lambda``
            must be 1.
        gamma, gae_lambda: discount and GAE λ.
        vtrace_rho_bar, vtrace_c_bar: V-trace's truncation levels ρ̄ and c̄ (IMPALA: 1 and 1).
    """

    estimator: Literal["gae", "vtrace"] = "gae"
    gamma: ClosedUnitInterval = 1.0
    gae_lambda: ClosedUnitInterval = 1.0
    vtrace_rho_bar: PositiveFloat = 1.0
    vtrace_c_bar: PositiveFloat = 1.0


@dataclass
class PPOLoss:
    """TorchRL's clipped PPO loss (``lit_rl.training.ppo_loss``).

    Attributes:
        clip_epsilon, critic_coef, entropy_coef: ``ClipPPOLoss`` settings.
        value_clip: clip radius of the value prediction around its collected value (paper's APPO:
            1.0); ``None`` for an unclipped critic loss.
        normalize_returns: compare critic predictions and value targets in units of a running
            mean/std of the returns (TorchRL ``RunningValueNorm``; paper's APPO: on).
        entropy_coef_with_retention: entropy coefficient used once any retention method is active
            (the paper switches the bonus off).
    """

    clip_epsilon: PositiveFloat = 0.2
    value_clip: PositiveFloat | None = None
    normalize_returns: bool = False
    critic_coef: NonNegativeFloat = 0.5
    entropy_coef: NonNegativeFloat = 0.0
    entropy_coef_with_retention: NonNegativeFloat | None = 0.0


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


class PPOFineTuning(FineTuning):
    """PPO fine-tuning of a pre-trained policy, with any combination of retention methods.

    Args: ``scenario``, ``pretrained``, ``teacher``, ``seed``, ``collection``, ``budget``,
    ``evaluation``, ``export`` and ``retention`` as in ``FineTuning``; PPO's own groups are
    ``optimisation`` (``Optimisation``), ``advantage`` (``Advantage``) and ``loss`` (``PPOLoss``).
    """

    def __init__(
        self,
        scenario: Scenario,
        pretrained: str | None = None,
        teacher: str | None = None,
        seed: int = 0,
        collection: Collection = Collection(),
        budget: Budget = Budget(),
        optimisation: Optimisation = Optimisation(),
        advantage: Advantage = Advantage(),
        loss: PPOLoss = PPOLoss(),
        evaluation: Evaluation = Evaluation(),
        export: Export = Export(),
        retention: list[RetentionMethod] | None = None,
    ):
        self.optimisation = settings(Optimisation, optimisation)
        self.advantage = settings(Advantage, advantage)
        self.loss = settings(PPOLoss, loss)
        collection = settings(Collection, collection)
        self._check(collection)
        super().__init__(
            scenario, pretrained, teacher, seed, collection, budget, evaluation, export, retention
        )
        self.register_buffer("dropped_batches", torch.tensor(0, dtype=torch.long))
        self.policy_version = PolicyVersion()

    def _check(self, collection: Collection) -> None:
        """Combinations the types cannot refuse, each in one line naming the settings."""
        if collection.workers < 1 or collection.num_envs % collection.workers:
            raise ValueError(
                f"model.collection.workers={collection.workers} must be >= 1 and divide "
                f"model.collection.num_envs={collection.num_envs}"
            )
        if self.optimisation.optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"model.optimisation.optimizer={self.optimisation.optimizer!r} is unknown: "
                "choose 'adam' or 'sgd'"
            )
        advantage = self.advantage
        if advantage.estimator not in ("gae", "vtrace"):
            raise ValueError(
                f"model.advantage.estimator={advantage.estimator!r} is unknown: choose 'gae' or 'vtrace'"
            )
        if advantage.estimator == "vtrace" and advantage.gae_lambda != 1:
            raise ValueError(
                f"model.advantage.estimator=vtrace has no λ (TorchRL's V-trace is the λ=1 estimator), "
                f"but model.advantage.gae_lambda={advantage.gae_lambda}: set it to 1.0 or use gae"
            )
        if (
            advantage.estimator == "vtrace"
            and type(self).compute_advantage is not PPOFineTuning.compute_advantage
        ):
            raise ValueError(
                f"model.advantage.estimator=vtrace is not available in {type(self).__name__}, whose "
                "advantages are its own: use model.advantage.estimator: gae"
            )

    def build_learner(self) -> None:
        loss, advantage = self.loss, self.advantage
        self.ppo_loss = make_ppo_loss(
            self.policy["actor"],
            shared_trunk_critic(self.policy["actor"], self.policy["critic"]),
            clip_epsilon=loss.clip_epsilon,
            critic_coef=loss.critic_coef,
            entropy_coef=self.entropy_coef,
            value_clip=loss.value_clip,
            normalize_returns=loss.normalize_returns,
        )
        gamma, lmbda = advantage.gamma, advantage.gae_lambda
        # GAE over the critic re-run on every frame and next frame: for batches whose collector
        # stored no values; else the same TorchRL GAE reads the stored ones (compute_advantage)
        self.gae = GAE(gamma=gamma, lmbda=lmbda, value_network=self.policy["critic"], average_gae=False)
        self.stored_value_advantage = GAE(gamma=gamma, lmbda=lmbda, value_network=None, average_gae=False)
        self.vtrace = BehaviourVTrace(
            gamma, advantage.vtrace_rho_bar, advantage.vtrace_c_bar, self.ppo_loss.tensor_keys.sample_log_prob
        )
        self._vtrace_clipped: float | None = None

    @property
    def entropy_coef(self) -> float:
        loss = self.loss
        return entropy_coef_in_use(loss.entropy_coef, loss.entropy_coef_with_retention, bool(self.retention))

    @property
    def _teacher_logits_wanted(self) -> bool:
        return any(method.needs_teacher_logits for method in self.retention.values())

    # --- collection -------------------------------------------------------------------------------
    def drop_batch(self, batch: TensorDictBase) -> bool:
        """An async batch whose oldest frame would exceed ``max_policy_lag`` when trained (Lightning
        trains it after the batch it fetched before, so one more update lands first) is dropped."""
        if self.collection.mode != "async":
            return False
        oldest = int(batch["policy_version"].min())
        if int(self.policy_version.version) + 1 - oldest <= self.collection.max_policy_lag:
            return False
        self.dropped_batches += 1
        return True

    def after_batch(self, collector, policy) -> None:
        """Synchronous process collectors receive the weights after every batch."""
        if self._collects_in_processes and self.collection.mode == "sync":
            collector.update_policy_weights_(policy)

    @property
    def _collects_in_processes(self) -> bool:
        return self.collection.workers > 1 or self.collection.mode == "async"

    @property
    def frames_per_batch(self) -> int:
        """Frames in one training batch: all envs × ``rollout_length``, or one async worker's
        share of the envs (each async batch comes from one worker)."""
        c = self.collection
        frames = c.num_envs * c.rollout_length
        return frames // c.workers if c.mode == "async" else frames

    def make_collector(self, remaining_frames: int):
        """The collector for ``remaining_frames``: in this process (sync, one worker), TorchRL's
        synchronous multi-process collector with the workers' envs side by side (sync), or its
        asynchronous one (``MultiAsyncCollector``: each batch is one worker's [envs, time])."""
        c, policy = self.collection, self._collection_policy()
        frames_per_batch = self.frames_per_batch
        batches = max(1, math.ceil(remaining_frames / frames_per_batch))
        settings = dict(
            frames_per_batch=frames_per_batch,
            # async: endless, since dropped batches do not count (the loader stops at the budget)
            total_frames=-1 if c.mode == "async" else batches * frames_per_batch,
            policy_device=self.device,
            storing_device=self.device,
            auto_register_policy_transforms=False,
        )
        seed, ks = self._env_seed(), self._teacher_logits_wanted
        if not self._collects_in_processes:
            env = self.scenario.make_env(c.num_envs, c.start, seed, training=True)
            env = self.scenario.add_teacher_state(env, c.num_envs) if ks else env
            return Collector(env, policy, **settings), policy
        per_worker = c.num_envs // c.workers
        makers = [
            TrainingEnvFactory(self.scenario, per_worker, c.start, seed + 97 * worker, ks)
            for worker in range(c.workers)
        ]
        # this process keeps its own thread count (TorchRL would set it to cores − workers)
        settings["num_threads"] = torch.get_num_threads()
        if c.mode == "async":
            collector = Collector(makers, policy, backend="process", num_collectors=c.workers,
                                  sync=False, use_buffers=True, **settings)  # fmt: skip
            return collector, policy
        # workers' envs side by side ([envs, time]), so every row stays one environment's trajectory
        collector = Collector(
            makers, policy, backend="process", num_collectors=c.workers, sync=True, cat_results=0,
            use_buffers=True, **settings,
        )  # fmt: skip
        return collector, policy

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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from runs with another ``normalize_returns`` setting still load: the return
        normaliser's statistics start fresh, or are dropped when normalisation is now off."""
        state = checkpoint["state_dict"]
        fresh = {k: v for k, v in self.state_dict().items() if k.startswith(VALUE_NORM_PREFIX)}
        for key in [k for k in state if k.startswith(VALUE_NORM_PREFIX) and k not in fresh]:
            del state[key]
        for key, value in fresh.items():
            state.setdefault(key, value)

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        """One group for the behaviour parameters (``lr``), one for the value function's own
        (``critic_lr``); the scenario's fixed parameters are in neither. With ``lr_decay``, torch's
        ``LinearLR`` takes both to 0 over the budget's batches (checkpointed with the optimiser)."""
        o = self.optimisation
        groups = self.parameter_groups()
        if o.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, weight_decay=o.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, eps=1e-7, weight_decay=o.weight_decay)
        if not o.lr_decay:
            return optimizer
        batches = max(1, math.ceil(self.budget.frames / self.frames_per_batch))
        decay = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=batches)
        return {"optimizer": optimizer, "lr_scheduler": decay}

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups by parameter role (subclasses add their own networks' groups)."""
        o = self.optimisation
        return [
            {"params": list(self.policy.behaviour_parameters().values()), "lr": o.lr},
            {"params": list(self.policy.value_parameters().values()), "lr": o.critic_lr or o.lr},
        ]

    def learn(self, batch: TensorDictBase, terms: dict) -> None:
        self._policy_lag = self._lag(batch)
        if self.optimisation.lr_decay:
            self.lr_schedulers().step()  # one step per batch: lr = base · (1 − frames / budget)
        if int(self.env_frames) <= self.budget.learning_starts:
            return
        with torch.no_grad():
            self.compute_advantage(batch)
        for _ in range(self.optimisation.epochs):
            for minibatch in self.minibatches(batch):
                self._update(minibatch, terms)
        self.policy_version.version += 1
        if self._running is not None and self.collection.mode == "async":
            # the workers start their next batch with these weights (the collector's weight sync)
            collector, policy = self._running
            collector.update_policy_weights_(policy)

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
        With ``advantage.estimator: vtrace`` the same values feed V-trace instead (a collector
        that stored no values gets them from the critic first).
        """
        if self.advantage.estimator == "vtrace":
            if "state_value" not in batch.keys():
                batch.set("state_value", self.policy["critic"](batch.copy())["state_value"])
            self._vtrace_clipped = self.vtrace(batch, self.policy["actor"], self._next_values(batch))
            return
        if "state_value" not in batch.keys():
            self.gae(batch)
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
        size = self.optimisation.minibatch_size
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
        losses.update(self.retention_losses(minibatch))
        self.optimise(losses, terms, self.optimisation.max_grad_norm)

    def extra_metrics(self, batch: TensorDictBase) -> dict[str, float]:
        metrics = {}
        if self.collection.mode == "async":
            metrics["train/dropped_batches"] = float(self.dropped_batches)
        if self._vtrace_clipped is not None:
            metrics["train/vtrace_clipped"] = self._vtrace_clipped
        if getattr(self, "_policy_lag", None) is not None:
            metrics["time/policy_lag"], metrics["time/policy_lag_max"] = self._policy_lag
        return metrics
