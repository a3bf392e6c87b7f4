"""Evaluating a policy from the start states of every subspace: one episode per environment.

``SubspaceEvaluator`` is the one evaluation rule: training-time evaluation (the
``SubspaceEvaluation`` callback) and ``lit-rl validate`` (``make eval``) both call it, with the same
environment seed and the same action-sampling seed, so re-evaluating a run's checkpoint reproduces
the numbers the run logged.

TorchRL's ``EnvBase.rollout`` stops at the first (or when all) done and returns the whole
[envs, steps] trajectory; this loop instead counts each environment's first episode only (later
auto-reset episodes ignored) and keeps running sums, so memory does not grow with the episode length
(NetHack: 1000 steps × 24×80 screens per environment).

``EvaluationWorker`` runs the same evaluator in a process of its own on snapshots of the actor's
weights, so training goes on while an evaluation plays (``SubspaceEvaluation(background=True)``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import traceback

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type


class SubspaceEvaluator:
    """Plays ``episodes`` episodes from each subspace's start states and returns their metrics.

    Args:
        episodes: episodes per subspace (one batched environment of that many copies).
        seed: seeds the environments and, through a forked torch RNG, the sampled actions: the
            same weights give the same numbers whenever and wherever they are evaluated.
        deterministic: act greedily instead of sampling from the policy.
        no_progress_steps, progress_key: end an episode once the ``next`` entry ``progress_key``
            has not changed for this many consecutive steps (``None``: off). The paper's NetHack
            evaluation ends an episode on death, 150 steps without progress or 100k steps; progress
            there is the in-game turn counter (``episode_turns``), as NLE's NetHackChallenge counts
            it (``nle/env/tasks.py`` ``_check_abort``, nle 1.3.0) with the timeout of 150 that the
            authors' code sets (finetuning-RL-as-CL ``sf_examples/nethack/nethack_env.py:98-99``).
    """

    def __init__(
        self,
        episodes: int = 256,
        seed: int = 10_000,
        deterministic: bool = False,
        no_progress_steps: int | None = None,
        progress_key: str = "episode_turns",
    ):
        if episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {episodes}")
        self.episodes, self.seed = episodes, seed
        self.exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
        self.stall = None if no_progress_steps is None else (progress_key, no_progress_steps)

    @classmethod
    def from_settings(cls, evaluation) -> SubspaceEvaluator:
        """The evaluator of a run's ``evaluation`` settings group."""
        return cls(
            evaluation.episodes,
            evaluation.seed,
            evaluation.deterministic,
            evaluation.no_progress_steps,
            evaluation.progress_key,
        )

    def evaluate(self, scenario, actor, subspace: str) -> dict[str, float]:
        env = scenario.make_env(self.episodes, subspace, self.seed)
        cuda = [p.device for p in actor.parameters() if p.is_cuda][:1]
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            metrics = evaluate_episodes(env, actor, scenario.max_episode_steps, self.exploration, self.stall)
        env.close()
        return metrics

    def evaluate_all(self, scenario, actor) -> dict[str, dict[str, float]]:
        """Metrics per subspace, the actor in eval mode meanwhile."""
        was_training = actor.training
        actor.eval()
        try:
            return {s: self.evaluate(scenario, actor, s) for s in scenario.subspaces}
        finally:
            actor.train(was_training)


@torch.no_grad()
def evaluate_episodes(
    env: EnvBase,
    policy,
    max_steps: int,
    exploration: ExplorationType = ExplorationType.RANDOM,
    stall: tuple[str, int] | None = None,
) -> dict[str, float]:
    """Run every environment of the batch for exactly one episode; return mean metrics.

    Environments that finish early keep stepping (auto-reset) but their later rewards are ignored,
    so the batch is evaluated in lock-step without per-environment Python loops. Reports
    ``return_mean``, ``return_std``, ``length_mean``, ``episodes`` and, when the environment marks
    it, ``success_rate``. An environment may also declare ``episode_metrics`` (metric name -> a
    ``next`` key holding a running per-episode statistic, e.g. NetHack's Sokoban pits filled): each
    is reported as the mean over episodes of the key's value on the step that ended the episode
    (or on the last step for an episode still running at ``max_steps``). Running values rather
    than summed increments, so a maximum (deepest level) is as easy to declare as a count.
    ``stall = (key, steps)`` ends an episode (counted as ended there) once ``key`` has not changed
    for ``steps`` consecutive steps (``ended_no_progress``: the share of episodes ended so).
    """
    n = env.batch_size.numel()
    returns = torch.zeros(n)
    lengths = torch.zeros(n)
    finished = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    has_success = "success" in env.full_done_spec.keys()
    extra = dict(getattr(env, "episode_metrics", None) or {})
    clash = set(extra) & {"return_mean", "return_std", "length_mean", "episodes", "success_rate"}
    if clash:
        raise ValueError(f"the env's episode_metrics {sorted(clash)} would replace standard metrics")
    finals = {name: torch.zeros(n, dtype=torch.float64) for name in extra}
    td = env.reset()
    progress = NoProgress(td, *stall) if stall is not None else None
    with set_exploration_type(exploration):
        for _ in range(max_steps):
            td = policy(td)
            td, next_root = env.step_and_maybe_reset(td)
            active = ~finished
            returns += td["next", "reward"].reshape(-1).cpu() * active
            lengths += active
            if has_success:
                success |= td["next", "success"].reshape(-1).cpu() & active
            for name, key in extra.items():
                value = td["next", key].reshape(-1).cpu().double()
                finals[name] = torch.where(active, value, finals[name])
            finished |= td["next", "done"].reshape(-1).cpu()
            if progress is not None:
                finished |= progress.stalled(td["next"], active & ~finished)
            if finished.all():
                break
            td = next_root
    metrics = {
        "return_mean": returns.mean().item(),
        "return_std": returns.std().item() if n > 1 else 0.0,
        "length_mean": lengths.mean().item(),
        "episodes": n,
    }
    if has_success:
        metrics["success_rate"] = success.float().mean().item()
    if progress is not None:
        metrics["ended_no_progress"] = progress.ended.float().mean().item()
    for name, values in finals.items():
        metrics[name] = values.mean().item()
    return metrics


class NoProgress:
    """Counts, per environment, the consecutive steps over which ``key`` did not change (NLE's
    ``_check_abort`` rule, applied by the evaluator so any scenario that reports a progress counter
    can use it); ``stalled`` is True for a running episode from the step that makes the count
    reach ``steps``; ``ended`` marks the episodes that ended so."""

    def __init__(self, root: TensorDictBase, key: str, steps: int):
        if key not in root.keys():
            raise ValueError(
                f"evaluation.progress_key = {key!r} is not an entry of this environment's observations: "
                "set evaluation.no_progress_steps to null or name an entry it has"
            )
        self.key, self.steps = key, steps
        self.last = root[key].reshape(-1).cpu().clone()
        self.count = torch.zeros_like(self.last, dtype=torch.long)
        self.ended = torch.zeros_like(self.last, dtype=torch.bool)

    def stalled(self, next_td: TensorDictBase, running: torch.Tensor) -> torch.Tensor:
        value = next_td[self.key].reshape(-1).cpu()
        self.count = torch.where(value == self.last, self.count + 1, 0)
        self.last = value.clone()
        now = (self.count >= self.steps) & running
        self.ended |= now
        return now


class EvaluationWorker:
    """A process that evaluates snapshots of an actor's weights, one after the other, in the order
    they were submitted: ``submit(tag, state_dict)``, then ``result()`` returns ``(tag, metrics)``.

    The worker builds its own actor from the scenario (``scenario.make_policy()``, the module the
    run trains) and loads each snapshot into it, so the evaluation is the one the training process
    would have run on those weights: same evaluator, same seeds, same thread count. It is forked
    where the platform can (Linux): a spawned worker re-imports torch, TorchRL and the simulators,
    ≈5 s on 2 busy cores against milliseconds for a fork, which would cost a short run more than
    its evaluations. Forking is safe at the moment the callback does it (its ``setup``, before any
    collector process or read-ahead thread exists; the child only runs CPU evaluations, as torch's
    own DataLoader workers do after a fork). It exits when told to, and by itself when its parent
    is gone (a run killed with SIGKILL leaves no evaluator behind: at most it finishes the
    evaluation it is playing); it is a daemon, so a run whose worker was never closed still exits
    (the evaluation environments start no processes of their own).

    Args:
        scenario, evaluator: what to evaluate with (both picklable).
        threads: torch threads of the worker (the training process's count, for equal numbers).
    """

    def __init__(self, scenario, evaluator: SubspaceEvaluator, threads: int):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._jobs, self._results = context.Queue(), context.Queue()
        self._process = context.Process(
            target=_serve, args=(scenario, evaluator, threads, self._jobs, self._results),
            name="lit_rl-evaluation", daemon=True,
        )  # fmt: skip
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, tag, state_dict: dict[str, torch.Tensor]) -> None:
        self._jobs.put((tag, state_dict))

    def result(self, block: bool = True):
        """The oldest finished evaluation as ``(tag, metrics)``, or ``None`` when none is ready
        and ``block`` is false; an error in the worker is raised here."""
        while True:
            try:
                tag, outcome = self._results.get(timeout=0.5 if block else 0.01)
                break
            except queue.Empty:
                if not block:
                    return None
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"the evaluation process ended (exit code {self._process.exitcode}) before "
                        "returning its evaluation: rerun with model.evaluation.background false to see why"
                    ) from None
        if isinstance(outcome, str):
            raise RuntimeError(f"evaluation in the background process failed:\n{outcome}")
        return tag, outcome

    def close(self, timeout: float = 30.0) -> None:
        """Ask the worker to stop after its current evaluation; kill it if it does not."""
        if self._process.is_alive():
            self._jobs.put(None)
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        for channel in (self._jobs, self._results):
            channel.cancel_join_thread()
            channel.close()


def _serve(scenario, evaluator: SubspaceEvaluator, threads: int, jobs, results) -> None:
    """The worker's loop (see ``EvaluationWorker``)."""
    torch.set_num_threads(threads)
    results.cancel_join_thread()  # a result nobody reads any more must not block the exit
    actor = scenario.make_policy().modules()["actor"]
    parent = multiprocessing.parent_process()
    while parent is None or parent.is_alive():
        try:
            job = jobs.get(timeout=0.5)
        except queue.Empty:
            continue
        if job is None:
            break
        tag, state_dict = job
        try:
            actor.load_state_dict(state_dict)
            results.put((tag, evaluator.evaluate_all(scenario, actor)))
        except Exception:
            results.put((tag, traceback.format_exc()))
    # the parent has read every result it waits for; skip the interpreter's teardown of torch and
    # the simulators (≈1.5 s on 2 busy cores), which the run's exit would otherwise wait for
    os._exit(0)
