"""The fine-tuning settings every trainer shares, grouped by concern (one dataclass per concern).

A YAML then reads as sections, and a preset overrides a section's keys only:

    model:
      collection: {num_envs: 64, rollout_length: 100}
      budget: {frames: 2000000}
      evaluation: {every_frames: 50000, episodes: 256}

The Lightning CLI (jsonargparse) parses each dataclass as a nested group, so overlaid configs merge
key by key. Each algorithm adds its own groups beside these (``lit_rl.training.ppo``,
``lit_rl.training.sac``). Checkpoints record the groups as plain dicts (``as_record``), so they
load with ``weights_only``; ``settings`` turns such a dict back into its dataclass.

The flat keys of earlier versions (``model.budget_frames`` …) are listed in ``MOVED_KEYS`` with
their new place, so an old config fails in one line that names it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal, TypeVar

from jsonargparse.typing import NonNegativeInt, PositiveInt

T = TypeVar("T")


@dataclass
class Collection:
    """How training batches are collected.

    Attributes:
        start: subspace the training episodes start in (``close`` for fine-tuning, ``far`` when
            pre-training π*).
        num_envs, rollout_length: one batch is ``num_envs × rollout_length`` frames.
        workers: processes that step the environments (each ``num_envs / workers`` of them,
            TorchRL's process collectors with the policy's weights sent after every batch); 1
            steps them in the training process (``sync``) or in one collector process (``async``).
        mode: ``sync`` collects each batch while the learner waits (TorchRL's synchronous
            collectors: the exact-reproduction mode; Lightning's one-batch prefetch makes the lag
            at most 1 batch). ``async`` uses TorchRL's ``MultiAsyncCollector``: each worker keeps
            one batch in flight, started with the newest weights as soon as the learner took its
            previous one, so stepping and learning overlap on separate cores.
        max_policy_lag: async batches whose oldest frame would be more learner batches old than
            this when trained are dropped (not counted in the budget; ``train/dropped_batches``).
        teacher_frames: how many frames of π*'s own rollouts stand in for the pre-training data
            when the scenario has no recorded data (BC's states, EWC's Fisher).
    """

    start: str = "close"
    num_envs: PositiveInt = 64
    rollout_length: PositiveInt = 100
    workers: PositiveInt = 1
    mode: Literal["sync", "async"] = "sync"
    max_policy_lag: PositiveInt = 3
    teacher_frames: PositiveInt = 20_000


@dataclass
class Budget:
    """How long a run trains and how many faults it tolerates.

    Attributes:
        frames: environment frames to train for (Lightning's ``global_step`` counts optimiser
            steps, not frames, so the trainer counts frames itself).
        learning_starts: frames collected before the first update.
        max_nonfinite_updates: consecutive non-finite losses tolerated before training stops.
        max_simulator_restarts: collector rebuilds after simulator faults before the run stops.
    """

    frames: PositiveInt = 1_000_000
    learning_starts: NonNegativeInt = 0
    max_nonfinite_updates: PositiveInt = 10
    max_simulator_restarts: NonNegativeInt = 10


@dataclass
class Evaluation:
    """The one evaluation rule (``SubspaceEvaluator``) of training-time evaluation and ``lit-rl
    validate``; ``every_frames`` and ``background`` are read by the ``SubspaceEvaluation`` callback.

    Attributes:
        every_frames: evaluation period in environment frames.
        episodes, seed, deterministic: episodes per subspace, their environment seed, and whether
            the actor takes its mode instead of sampling.
        no_progress_steps, progress_key: end an evaluation episode once the observation entry
            ``progress_key`` has not changed for this many steps (``null``: off; the NetHack paper
            preset: 150 steps of an unchanged in-game turn counter, ``SubspaceEvaluator``).
        background: evaluate snapshots of the weights in a process of its own while training goes
            on (same numbers, logged at the snapshot's frames). Off by default: the worker wants a
            core the learner and collectors leave free (docs/throughput.md).
    """

    every_frames: PositiveInt = 50_000
    episodes: PositiveInt = 256
    seed: int = 10_000
    deterministic: bool = False
    no_progress_steps: PositiveInt | None = None
    progress_key: str = "episode_turns"
    background: bool = False


@dataclass
class Export:
    """Attributes:
    policy: where to write the trained policy at the end of fit (pre-training's product, π*).
    """

    policy: str | None = None


def settings(cls: type[T], value: T | dict | None) -> T:
    """``value`` as a ``cls`` dataclass of builtin values: from the parsed dataclass (whose
    range-checked numbers become plain, so optimiser states and checkpoints hold only builtins),
    from a checkpoint's recorded dict, or the defaults when ``None``."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return type(value)(**as_record(value))
    return cls(**dict(value))


def as_record(value):
    """A settings dataclass as a dict of builtin values (what checkpoints and ``hparams`` hold):
    range-checked numbers (``PositiveInt`` …) become plain ``int``/``float``, so checkpoints load
    with ``torch.load(weights_only=True)``."""
    if not dataclasses.is_dataclass(value):
        return value
    return {key: _plain(item) for key, item in dataclasses.asdict(value).items()}


def record_settings(module) -> None:
    """Replace the settings dataclasses in a LightningModule's saved hyperparameters (and the copy
    its loggers receive) by their records, so checkpoints hold only builtin values."""
    for key, value in list(module.hparams.items()):
        module.hparams[key] = as_record(value)
    module._hparams_initial = copy.deepcopy(module._hparams)


def _plain(value):
    if isinstance(value, bool) or value is None or type(value) in (int, float, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


#: old flat ``model.<key>`` → its group, per trainer (``ppo`` covers PPO and its RND variant)
MOVED_KEYS: dict[str, dict[str, str]] = {
    "ppo": {
        "train_start": "collection.start",
        "num_envs": "collection.num_envs",
        "rollout_length": "collection.rollout_length",
        "collector_workers": "collection.workers",
        "collection": "collection.mode",
        "max_policy_lag": "collection.max_policy_lag",
        "pretraining_state_frames": "collection.teacher_frames",
        "budget_frames": "budget.frames",
        "learning_starts_frames": "budget.learning_starts",
        "max_nonfinite_updates": "budget.max_nonfinite_updates",
        "max_simulator_restarts": "budget.max_simulator_restarts",
        "optimizer": "optimisation.optimizer",
        "lr": "optimisation.lr",
        "critic_lr": "optimisation.critic_lr",
        "lr_decay": "optimisation.lr_decay",
        "weight_decay": "optimisation.weight_decay",
        "max_grad_norm": "optimisation.max_grad_norm",
        "ppo_epochs": "optimisation.epochs",
        "minibatch_size": "optimisation.minibatch_size",
        "advantage": "advantage.estimator",
        "gamma": "advantage.gamma",
        "gae_lambda": "advantage.gae_lambda",
        "vtrace_rho_bar": "advantage.vtrace_rho_bar",
        "vtrace_c_bar": "advantage.vtrace_c_bar",
        "clip_epsilon": "loss.clip_epsilon",
        "value_clip": "loss.value_clip",
        "normalize_returns": "loss.normalize_returns",
        "critic_coef": "loss.critic_coef",
        "entropy_coef": "loss.entropy_coef",
        "entropy_coef_with_retention": "loss.entropy_coef_with_retention",
        "eval_every_frames": "evaluation.every_frames",
        "eval_episodes": "evaluation.episodes",
        "eval_seed": "evaluation.seed",
        "eval_deterministic": "evaluation.deterministic",
        "eval_background": "evaluation.background",
        "export_policy": "export.policy",
        "ext_coef": "rnd.ext_coef",
        "int_coef": "rnd.int_coef",
        "gamma_int": "rnd.gamma_int",
        "rnd_update_proportion": "rnd.update_proportion",
        "obs_warmup_steps": "rnd.obs_warmup_steps",
        "clip_extrinsic_reward": "rnd.clip_extrinsic_reward",
        "normalize_advantage": "rnd.normalize_advantage",
        "adam_eps": "rnd.adam_eps",
    },
    "sac": {
        "train_start": "collection.start",
        "num_envs": "collection.num_envs",
        "rollout_length": "collection.rollout_length",
        "budget_frames": "budget.frames",
        "learning_starts": "budget.learning_starts",
        "start_steps": "replay.start_steps",
        "buffer_size": "replay.buffer_size",
        "warmup": "replay.warmup",
        "warmup_noise": "replay.warmup_noise",
        "warmup_bc_updates": "replay.warmup_bc_updates",
        "batch_size": "sac.batch_size",
        "updates_per_frame": "sac.updates_per_frame",
        "lr": "sac.lr",
        "gamma": "sac.gamma",
        "tau": "sac.tau",
        "alpha_init": "sac.alpha_init",
        "eval_every_frames": "evaluation.every_frames",
        "eval_episodes": "evaluation.episodes",
        "eval_seed": "evaluation.seed",
        "eval_deterministic": "evaluation.deterministic",
        "loglik_every_frames": "loglik.every_frames",
        "loglik_transitions": "loglik.transitions",
        "export_policy": "export.policy",
        "export_transitions": "export.transitions",
    },
}
