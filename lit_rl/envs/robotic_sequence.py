"""RoboticSequence (paper section 4): four Meta-World tasks solved one after another in one episode.

The stages are Meta-World v3's single-task environments ``hammer-v3 → push-v3 → peg-unplug-side-v3
→ push-wall-v3`` (`ROBOTIC_SEQUENCE`). A stage's success (Meta-World's ``info["success"]``) moves
the agent to the next stage: that stage's scene is reset (its own random object and goal positions)
and its first observation is the next one the agent sees. The episode succeeds when its last stage
succeeds, so a full-sequence episode succeeds when all four stages are solved in order.

Definitions (T = ``steps_per_stage`` = 200, β = ``success_reward_scale`` = 1.5):

- **Time.** Every stage has its own clock t = the number of steps already taken in the current
  stage (0 on entering a stage). The agent acts at t = 0, 1, …, T − 1; after the action at
  t = T − 1 without success the episode ends (the time limit); a success on that step counts.
- **Observation** ``observation`` (float32, 39 + S + 1 with S stages, 44 for the paper's sequence):
  Meta-World's 39-d state of the current stage's scene (hand, gripper, objects for this and the
  previous frame, goal position: goal-observable, as in Meta-World's MT benchmarks, because the
  goal is re-sampled every episode) ‖ one-hot of the stage's index in ``stages`` ‖ t / T.
- **Reward.** Meta-World's reward r_t ∈ [0, 10] of the stage being played (``task_reward``). On the
  step that solves the episode's last stage it becomes β · r_t · (T − t), t being the time of
  that action: the reward the agent would have kept earning for the T − t steps the terminal
  success cuts off, so that succeeding early never pays less than lingering near the goal.
  Solving an earlier stage keeps r_t: the next stage starts with a fresh clock, nothing is cut off.
- **Termination.** The last stage's success and the time limit both end the episode, and neither
  is bootstrapped (the paper: "no bootstrapping"; t / T is observed, so the time limit is part of
  the state and a true terminal of this MDP). TorchRL keys: ``terminated`` = success or time
  limit, ``truncated`` = False, ``done`` = ``terminated``; TorchRL's value targets multiply the
  next value by (1 − terminated), so neither end bootstraps. ``time_limit_terminal=False``
  reports the time limit as ``truncated`` (bootstrapped) instead, for users who want that.
- **Random starts.** Every reset of a stage samples its object and goal positions uniformly from
  the task's own ``_random_reset_space`` (Meta-World's `SawyerXYZEnv._get_state_rand_vec`, with
  its seeded branch: the environment's ``np_random``). Meta-World's MT1/MT10 benchmarks instead
  pre-draw 50 such vectors and pick one per episode; here every episode draws a new one.

Variants (for π* and FAR evaluation): ``start_stages`` names the stages an episode may start in
(drawn uniformly per episode, seeded), so ``("push-wall-v3",)`` enters push-wall directly;
``stages_per_episode`` ends an episode after that many stages (``1`` with
``start_stages=("peg-unplug-side-v3", "push-wall-v3")`` gives the multi-task setting π* is trained
in: each stage in its own episodes). The one-hot keeps the stage's index in the whole sequence, so
a stage has the same id (and policy head) in every variant.

Batched: ``num_envs`` sequences per process, stepped in a Python loop over Meta-World's own
`step` (MuJoCo's stepping holds the GIL, so threads would not help); for more cores run it in
worker processes (TorchRL `ParallelEnv`, or a multi-process collector); `docs/robotic.md` has
the measured throughput of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Composite, Unbounded
from torchrl.envs import EnvBase

ROBOTIC_SEQUENCE = ("hammer-v3", "push-v3", "peg-unplug-side-v3", "push-wall-v3")
CLOSE_STAGES = ROBOTIC_SEQUENCE[:2]
FAR_STAGES = ROBOTIC_SEQUENCE[2:]
TASK_OBS_DIM = 39
ACTION_DIM = 4
STEPS_PER_STAGE = 200
SUCCESS_REWARD_SCALE = 1.5


def make_task_env(name: str, seed: int) -> SawyerXYZEnv:
    """One Meta-World v3 single-task env with a goal in the observation and seeded random starts.

    Meta-World's constructors leave an env unusable until a task is set, and its ready-made
    ``*-goal-observable`` classes freeze the start after their first reset. Here: the goal is part
    of the observation (``_partially_observable = False``; the observation space is cached, so
    it is dropped to be rebuilt with the goal bounds), the task counts as set, and every reset draws
    fresh object and goal positions (``_freeze_rand_vec = False``) from the env's own seeded
    generator (``seeded_rand_vec = True`` reads ``np_random``, which ``seed`` sets) instead of
    NumPy's global one. Shared by `RoboticSequenceEnv` and the benchmark's raw baseline.
    """
    if name not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown Meta-World v3 task {name!r}")
    env = ALL_V3_ENVIRONMENTS[name]()
    env._partially_observable = False
    del env.sawyer_observation_space
    env.observation_space = env.sawyer_observation_space
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.seed(int(seed))
    return env


def sequence_seeds(seed: int, num_sequences: int, num_stages: int) -> list[list[int]]:
    """Per sequence: a seed for its start-stage draws, then one per stage's Meta-World scene.

    Independent streams split from one `numpy.random.SeedSequence`, so no two sequences (or
    scenes) share random starts. The benchmark's raw baseline rebuilds the same scenes and draws
    from these seeds.
    """
    children = np.random.SeedSequence(seed).spawn(num_sequences)
    return [child.generate_state(num_stages + 1).tolist() for child in children]


class RoboticSequenceEnv(EnvBase):
    """``num_envs`` RoboticSequence episodes stepped together; definitions in the module docstring.

    ``stages``: the sequence (Meta-World v3 task names, default the paper's four); ``start_stages``:
    names (or indices into ``stages``) an episode may start in, default the first;
    ``stages_per_episode``: stages an episode runs at most (None: through the last stage).
    Only the stages an episode can reach are built (each is a MuJoCo scene per sequence).

    Keys besides ``observation``: ``stage`` (index into ``stages`` of the stage the observation
    belongs to), ``task_reward`` (Meta-World's r_t before the success augmentation),
    ``stage_success`` (this step solved the stage the action was taken in: the input's ``stage``),
    ``stages_solved`` (stages solved so far in the episode), ``time_limit`` (this step ended the
    episode by the time limit), and the done key ``success`` (this step solved the episode's last
    stage; never True unless ``done`` is, so it triggers no extra reset).
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        stages: Sequence[str] = ROBOTIC_SEQUENCE,
        start_stages: Sequence[str | int] | str | int | None = None,
        stages_per_episode: int | None = None,
        steps_per_stage: int = STEPS_PER_STAGE,
        success_reward_scale: float = SUCCESS_REWARD_SCALE,
        time_limit_terminal: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        stages = tuple(stages)
        if not stages:
            raise ValueError("stages is empty")
        unknown = [s for s in stages if s not in ALL_V3_ENVIRONMENTS]
        if unknown:
            raise ValueError(
                f"unknown Meta-World v3 tasks {unknown}: choose from {sorted(ALL_V3_ENVIRONMENTS)}"
            )
        if start_stages is None:
            start_stages = (0,)
        elif isinstance(start_stages, str | int):
            start_stages = (start_stages,)
        starts = tuple(self._stage_index(stages, s) for s in start_stages)
        if not starts:
            raise ValueError("start_stages is empty")
        if stages_per_episode is not None and stages_per_episode < 1:
            raise ValueError(f"stages_per_episode must be >= 1 or None, got {stages_per_episode}")
        # Meta-World raises once a scene has run max_path_length (500) steps since its reset.
        limit = SawyerXYZEnv.max_path_length
        if not 1 <= steps_per_stage <= limit:
            raise ValueError(f"steps_per_stage must be in [1, {limit}] (Meta-World's path length)")
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.num_envs = num_envs
        self.stages = stages
        self.start_stages = starts
        self.stages_per_episode = stages_per_episode
        self.steps_per_stage = steps_per_stage
        self.success_reward_scale = float(success_reward_scale)
        self.time_limit_terminal = time_limit_terminal
        n, s = num_envs, len(stages)
        span = s if stages_per_episode is None else stages_per_episode
        reachable = sorted({j for i in starts for j in range(i, min(i + span, s))})
        self._seed = int(seed)
        seeds = sequence_seeds(self._seed, self.num_envs, len(self.stages))
        # task_envs[i][j]: sequence i's Meta-World env of stage j (None if no episode reaches it).
        self.task_envs: list[list[SawyerXYZEnv | None]] = [
            [make_task_env(stages[j], seeds[i][j + 1]) if j in reachable else None for j in range(s)]
            for i in range(n)
        ]
        self._rngs = [np.random.default_rng(seeds[i][0]) for i in range(n)]
        self._stage = np.zeros(n, dtype=np.int64)
        self._last_stage = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._solved = np.zeros(n, dtype=np.int64)
        # Working buffers written row by row in the step loop; every output copies them once, so a
        # tensor handed to a collector is never changed by a later step.
        self._obs = np.zeros((n, TASK_OBS_DIM + s + 1), dtype=np.float32)
        self._task_reward = np.zeros(n, dtype=np.float32)
        self._reward = np.zeros(n, dtype=np.float32)
        self._stage_success = np.zeros(n, dtype=bool)
        self._success = np.zeros(n, dtype=bool)
        self._time_limit = np.zeros(n, dtype=bool)
        self._make_specs(n, s)

    @staticmethod
    def _stage_index(stages: tuple[str, ...], stage: str | int) -> int:
        if isinstance(stage, str):
            if stage not in stages:
                raise ValueError(f"start stage {stage!r} is not in the sequence {stages}")
            return stages.index(stage)
        if not 0 <= stage < len(stages):
            raise ValueError(f"start stage index {stage} is outside the sequence {stages}")
        return int(stage)

    def _make_specs(self, n: int, s: int) -> None:
        def flag(shape: tuple[int, ...] = (n,)) -> Binary:
            return Binary(shape=shape, dtype=torch.bool, device=self.device)

        self.observation_spec = Composite(
            observation=Unbounded(shape=(n, TASK_OBS_DIM + s + 1), dtype=torch.float32, device=self.device),
            stage=Bounded(0, s - 1, shape=(n,), dtype=torch.int64, device=self.device),
            task_reward=Unbounded(shape=(n, 1), dtype=torch.float32, device=self.device),
            stage_success=flag(),
            stages_solved=Bounded(0, s, shape=(n,), dtype=torch.int64, device=self.device),
            time_limit=flag(),
            shape=(n,),
        )
        self.action_spec = Bounded(-1.0, 1.0, shape=(n, ACTION_DIM), dtype=torch.float32, device=self.device)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=self.device)
        self.full_done_spec = Composite(
            done=flag((n, 1)),
            terminated=flag((n, 1)),
            truncated=flag((n, 1)),
            success=flag((n, 1)),
            shape=(n,),
        )

    # -- sequence logic ---------------------------------------------------------------------------

    def _write_obs(self, i: int, task_obs: np.ndarray) -> None:
        row = self._obs[i]
        row[:TASK_OBS_DIM] = task_obs
        row[TASK_OBS_DIM:-1] = 0.0
        row[TASK_OBS_DIM + self._stage[i]] = 1.0
        row[-1] = self._t[i] / self.steps_per_stage

    def _enter_stage(self, i: int, stage: int) -> None:
        """Reset sequence i's scene of ``stage`` (fresh random positions) and observe it at t = 0."""
        self._stage[i] = stage
        self._t[i] = 0
        task_obs, _ = self.task_envs[i][stage].reset()
        self._write_obs(i, task_obs)

    def _start_episode(self, i: int) -> None:
        starts = self.start_stages
        first = starts[0] if len(starts) == 1 else starts[int(self._rngs[i].integers(len(starts)))]
        span = len(self.stages) - first if self.stages_per_episode is None else self.stages_per_episode
        self._last_stage[i] = min(first + span, len(self.stages)) - 1
        self._solved[i] = 0
        self._enter_stage(i, first)

    def _step_sequences(self, action: np.ndarray) -> np.ndarray:
        """Step every sequence once (module docstring); returns the per-sequence episode end."""
        ended = np.zeros(self.num_envs, dtype=bool)
        beta, horizon = self.success_reward_scale, self.steps_per_stage
        for i, act in enumerate(action):
            stage, t = int(self._stage[i]), int(self._t[i])
            task_obs, reward, _, _, info = self.task_envs[i][stage].step(act)
            reward = float(reward)
            self._t[i] = t + 1
            solved = bool(info["success"])
            self._task_reward[i] = reward
            self._stage_success[i] = solved
            self._success[i] = False
            self._time_limit[i] = False
            if solved:
                self._solved[i] += 1
                if stage == self._last_stage[i]:
                    reward = beta * reward * (horizon - t)
                    self._success[i] = ended[i] = True
                    self._write_obs(i, task_obs)
                else:
                    self._enter_stage(i, stage + 1)
            else:
                self._time_limit[i] = ended[i] = t + 1 >= horizon
                self._write_obs(i, task_obs)
            self._reward[i] = reward
        return ended

    # -- EnvBase ----------------------------------------------------------------------------------

    def _output(self, **extra: torch.Tensor) -> TensorDict:
        """The observation keys (copies of the working buffers) plus ``extra``, in one TensorDict:
        one constructor call costs less than setting keys one by one."""
        return TensorDict(
            {
                "observation": torch.from_numpy(self._obs.copy()),
                "stage": torch.from_numpy(self._stage.copy()),
                "task_reward": torch.from_numpy(self._task_reward.copy()).unsqueeze(-1),
                "stage_success": torch.from_numpy(self._stage_success.copy()),
                "stages_solved": torch.from_numpy(self._solved.copy()),
                "time_limit": torch.from_numpy(self._time_limit.copy()),
                **extra,
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        mask = np.ones(self.num_envs, dtype=bool) if mask is None else mask.reshape(-1).cpu().numpy()
        for i in np.flatnonzero(mask):
            self._start_episode(int(i))
            self._task_reward[i] = 0.0
            self._stage_success[i] = False
            self._time_limit[i] = False
        out = self._output()
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict["action"].reshape(self.num_envs, ACTION_DIM).cpu().numpy().astype(np.float64)
        np.clip(action, -1.0, 1.0, out=action)
        ended = self._step_sequences(action)
        time_limit = self._time_limit.copy()
        if self.time_limit_terminal:
            terminated, truncated = ended, np.zeros_like(ended)
        else:
            terminated, truncated = ended & ~time_limit, time_limit
        return self._output(
            reward=torch.from_numpy(self._reward.copy()).unsqueeze(-1),
            terminated=torch.from_numpy(terminated).unsqueeze(-1),
            truncated=torch.from_numpy(truncated).unsqueeze(-1),
            done=torch.from_numpy(ended).unsqueeze(-1),
            success=torch.from_numpy(self._success.copy()).unsqueeze(-1),
        )

    def _set_seed(self, seed: int | None) -> None:
        """Reseed every sequence's start-stage draws and every Meta-World scene's position sampler;
        the next reset then starts as a fresh env built with this seed does."""
        self._seed = 0 if seed is None else int(seed)
        seeds = sequence_seeds(self._seed, self.num_envs, len(self.stages))
        for i, envs in enumerate(self.task_envs):
            self._rngs[i] = np.random.default_rng(seeds[i][0])
            for j, env in enumerate(envs):
                if env is not None:
                    env.seed(seeds[i][j + 1])

    def close(self, *, raise_if_closed: bool = True) -> None:
        for envs in getattr(self, "task_envs", []):
            for env in envs:
                if env is not None:
                    env.close()
        super().close(raise_if_closed=raise_if_closed)
