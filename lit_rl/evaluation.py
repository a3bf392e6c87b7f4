"""Evaluating a policy from the start states of every subspace: one episode per environment.

``SubspaceEvaluator`` is the one evaluation rule: training-time evaluation (the
``SubspaceEvaluation`` callback) and ``lit-rl validate`` (``make eval``) both call it, with the same
environment seed and the same action-sampling seed, so re-evaluating a run's checkpoint reproduces
the numbers the run logged.

TorchRL's ``EnvBase.rollout`` stops at the first (or when all) done and returns the whole
[envs, steps] trajectory; this loop instead counts each environment's first episode only (later
auto-reset episodes ignored) and keeps running sums, so memory does not grow with the episode length
(NetHack: 1000 steps × 24×80 screens per environment).
"""

from __future__ import annotations

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type


class SubspaceEvaluator:
    """Plays ``episodes`` episodes from each subspace's start states and returns their metrics.

    Args:
        episodes: episodes per subspace (one batched environment of that many copies).
        seed: seeds the environments and, through a forked torch RNG, the sampled actions: the
            same weights give the same numbers whenever and wherever they are evaluated.
        deterministic: act greedily instead of sampling from the policy.
    """

    def __init__(self, episodes: int = 256, seed: int = 10_000, deterministic: bool = False):
        if episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {episodes}")
        self.episodes, self.seed = episodes, seed
        self.exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM

    def evaluate(self, scenario, actor, subspace: str) -> dict[str, float]:
        env = scenario.make_env(self.episodes, subspace, self.seed)
        cuda = [p.device for p in actor.parameters() if p.is_cuda][:1]
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            metrics = evaluate_episodes(env, actor, scenario.max_episode_steps, self.exploration)
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
    env: EnvBase, policy, max_steps: int, exploration: ExplorationType = ExplorationType.RANDOM
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
    for name, values in finals.items():
        metrics[name] = values.mean().item()
    return metrics
