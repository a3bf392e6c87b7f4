"""Evaluating a policy from the start states of one subspace: one episode per environment."""

from __future__ import annotations

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type


@torch.no_grad()
def evaluate_episodes(
    env: EnvBase, policy, max_steps: int, exploration: ExplorationType = ExplorationType.RANDOM
) -> dict[str, float]:
    """Run every environment of the batch for exactly one episode; return mean metrics.

    Environments that finish early keep stepping (auto-reset) but their later rewards are ignored,
    so the batch is evaluated in lock-step without per-environment Python loops. Reports
    ``return_mean``, ``return_std``, ``length_mean``, ``episodes`` and, when the environment marks
    it, ``success_rate``.
    """
    n = env.batch_size.numel()
    returns = torch.zeros(n)
    lengths = torch.zeros(n)
    finished = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    has_success = "success" in env.full_done_spec.keys()
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
    return metrics
