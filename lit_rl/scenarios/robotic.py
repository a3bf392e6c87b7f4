"""RoboticSequence as a scenario (paper section 4; `docs/robotic.md`): SAC's multi-head MLPs,
CLOSE = the whole sequence from hammer, FAR = the last two stages entered directly.

Subspaces (each evaluated in its own episodes):

- ``close``: the downstream task, hammer → push → peg-unplug-side → push-wall from hammer;
  ``success_rate`` is the whole-sequence success, and every stage's success in the sequence is an
  episode metric (``hammer_success`` … ``push_wall_success``: the episode solved that stage).
- ``far``: the sequence entered at peg-unplug-side (peg-unplug-side → push-wall), the part π*
  was trained on; ``peg_unplug_side_success`` and ``push_wall_success`` per stage.
- ``push_wall``: push-wall entered directly (one stage): the paper's forgetting curve.

Training starts (``train_start``): ``close`` for fine-tuning; ``far_tasks`` for π*'s pre-training
(multi-task on the last two stages: each episode is one of them, drawn uniformly, ended by its
success or time limit), besides the subspaces themselves.

π*'s transitions (``pretraining_buffer``), a file in the replay-file format: BC's 10k states,
EWC's 2,560 Fisher states, EM's 10k kept transitions and the log-likelihood set all come from it
(``pretraining_states`` samples it, seeded). Two sources write one: the SAC pre-training run, beside
the exported policy (``<export_policy stem>.buffer.pt``: its final replay buffer, what π* did while
it learned — the CPU preset's default), and ``lit_rl.pretraining.robotic_rollouts`` (π*'s fresh
rollouts on its two stages, ``<stem>.rollouts.pt``: what π* does once trained — the paper preset's,
App. B.3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from jsonargparse.typing import PositiveInt
from metaworld import policies as scripted
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Binary, Bounded
from torchrl.envs import EnvBase

from lit_rl.envs.robotic_sequence import (
    ACTION_DIM,
    FAR_STAGES,
    ROBOTIC_SEQUENCE,
    STEPS_PER_STAGE,
    TASK_OBS_DIM,
    RoboticSequenceEnv,
)
from lit_rl.models.sac_mlp import GaussianActorNet, QNet, make_gaussian_actor, make_qvalue
from lit_rl.safe_load import safe_load
from lit_rl.scenarios.base import Policy, Scenario

#: training-only start: π*'s multi-task setting (each FAR stage in its own episodes)
PRETRAIN_START = "far_tasks"


def stage_key(stage: str) -> str:
    """``peg-unplug-side-v3`` → ``peg_unplug_side`` (metric and visitation names)."""
    return stage.removesuffix("-v3").replace("-", "_")


class StageSuccessEnv(RoboticSequenceEnv):
    """`RoboticSequenceEnv` plus ``solved_<stage>`` flags: this episode has solved that stage.

    Computed from the env's own counters at every output: the highest stage solved is the
    current stage − 1 (+ 1 after the last stage's success, where the stage does not advance), and
    the episode's first stage is the current stage − stages solved (+ the same success); a stage
    is solved when it lies between them. ``episode_metrics`` names them for `evaluate_episodes`,
    which reads each flag on the step that ends the episode.
    """

    def _make_specs(self, n: int, s: int) -> None:
        super()._make_specs(n, s)
        for stage in self.stages:
            self.observation_spec[f"solved_{stage_key(stage)}"] = Binary(
                shape=(n,), dtype=torch.bool, device=self.device
            )

    def _output(self, **extra: torch.Tensor) -> TensorDict:
        success = self._success.astype(np.int64)
        highest = self._stage - 1 + success
        first = self._stage - self._solved + success
        for index, stage in enumerate(self.stages):
            solved = (first <= index) & (index <= highest)
            extra[f"solved_{stage_key(stage)}"] = torch.from_numpy(solved)
        return super()._output(**extra)


#: Meta-World's own scripted expert of each stage (``metaworld.policies``)
SCRIPTED = {
    "hammer-v3": scripted.SawyerHammerV3Policy,
    "push-v3": scripted.SawyerPushV3Policy,
    "peg-unplug-side-v3": scripted.SawyerPegUnplugSideV3Policy,
    "push-wall-v3": scripted.SawyerPushWallV3Policy,
}


class ScriptedStagePolicy(TensorDictModuleBase):
    """Meta-World's scripted expert of each row's stage, plus Gaussian noise of std ``noise``
    (clipped to [−1, 1]): an optional warm-up behaviour for π*'s SAC pre-training (its first
    ``start_steps`` frames; ``SACFineTuning.warmup``) in place of uniformly random actions."""

    def __init__(self, stages: tuple[str, ...], noise: float = 0.1, seed: int = 0):
        super().__init__()
        self.in_keys, self.out_keys = ["observation", "stage"], ["action"]
        self.experts = [SCRIPTED[s]() for s in stages]
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs = td["observation"].reshape(-1, td["observation"].shape[-1]).cpu().numpy()
        stage = td["stage"].reshape(-1).cpu().numpy()
        actions = np.stack(
            [self.experts[k].get_action(o[:TASK_OBS_DIM]) for o, k in zip(obs, stage, strict=True)]
        )
        actions = np.clip(actions + self.noise * self.rng.standard_normal(actions.shape), -1.0, 1.0)
        td.set("action", torch.as_tensor(actions, dtype=torch.float32).reshape(*td.shape, ACTION_DIM))
        return td


class RoboticSequence(Scenario):
    """The paper's robotic sequence with SAC's per-stage-head MLPs.

    Args:
        hidden, depth: the actor's and critics' hidden width and number of hidden layers
            (paper: 256 × 4).
        steps_per_stage: T (paper: 200).
        pretraining_buffer: π*'s transitions (its training buffer, or its fresh rollouts in the
            paper preset); BC, EWC, EM and the log-likelihood set read it.
    """

    name = "robotic"
    subspaces = ("close", "far", "push_wall")
    pretraining_subspace = "far"

    def __init__(
        self,
        hidden: PositiveInt = 256,
        depth: PositiveInt = 4,
        steps_per_stage: PositiveInt = STEPS_PER_STAGE,
        pretraining_buffer: str | None = "pretrained/robotic.buffer.pt",
    ):
        # plain ints: describe() goes into policy files that load with weights_only
        self.hidden, self.depth, self.steps_per_stage = int(hidden), int(depth), int(steps_per_stage)
        self.pretraining_buffer = pretraining_buffer
        self.stages = ROBOTIC_SEQUENCE
        self.max_episode_steps = steps_per_stage * len(self.stages)

    def check_start(self, start: str) -> None:
        if start != PRETRAIN_START:
            super().check_start(start)

    def _variant(self, start: str) -> dict:
        if start == "close":
            return {}
        if start == "far":
            return {"start_stages": FAR_STAGES[0]}
        if start == "push_wall":
            return {"start_stages": FAR_STAGES[1], "stages_per_episode": 1}
        return {"start_stages": FAR_STAGES, "stages_per_episode": 1}  # PRETRAIN_START

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        self.check_start(start)
        env = StageSuccessEnv(
            num_envs, steps_per_stage=self.steps_per_stage, seed=seed, **self._variant(start)
        )
        first = env.start_stages[0]
        last = len(self.stages) if env.stages_per_episode is None else first + env.stages_per_episode
        env.episode_metrics = {
            f"{stage_key(s)}_success": f"solved_{stage_key(s)}" for s in self.stages[first:last]
        }
        return env

    def make_policy(self) -> Policy:
        obs_dim, stages = TASK_OBS_DIM + len(self.stages) + 1, len(self.stages)
        action_spec = Bounded(-1.0, 1.0, shape=(ACTION_DIM,), dtype=torch.float32)
        actor = make_gaussian_actor(
            GaussianActorNet(obs_dim, ACTION_DIM, stages, self.hidden, self.depth), action_spec
        )
        critic = make_qvalue(QNet(obs_dim, ACTION_DIM, stages, self.hidden, self.depth))
        return Policy(actor=actor, critic=critic)

    def scripted_policy(self, noise: float, seed: int) -> ScriptedStagePolicy:
        """Meta-World's scripted experts with action noise (π*'s optional warm-up behaviour)."""
        return ScriptedStagePolicy(self.stages, noise, seed)

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Share of the batch's frames in each stage, and in CLOSE (hammer, push) / FAR."""
        stage = batch["stage"].reshape(-1)
        shares = {stage_key(s): (stage == i).float().mean().item() for i, s in enumerate(self.stages)}
        far = sum(shares[stage_key(s)] for s in FAR_STAGES)
        return {**shares, "close": 1.0 - far, "far": far}

    def pretraining_states(self, seed: int) -> Callable[[int], TensorDictBase] | None:
        """Uniform draws (seeded) from π*'s replay transitions; ``None`` if the file is not set."""
        if self.pretraining_buffer is None:
            return None
        transitions = load_transitions(self.pretraining_buffer)
        generator = torch.Generator().manual_seed(seed)

        def sample(n: int) -> TensorDictBase:
            index = torch.randperm(len(transitions), generator=generator)[: min(n, len(transitions))]
            return transitions[index]

        return sample

    def describe(self) -> dict:
        return {
            "scenario": self.name,
            "hidden": self.hidden,
            "depth": self.depth,
            "stages": list(self.stages),
        }


def load_transitions(path: str | Path) -> TensorDictBase:
    """π*'s replay transitions saved by its pre-training run (a flat TensorDict as nested dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"π*'s replay transitions {path} not found: they are written beside the policy by its "
            "pre-training run (`make pretrain ENV=robotic`)"
        )
    payload = safe_load(path)
    return TensorDict(payload["transitions"], batch_size=[payload["size"]])
