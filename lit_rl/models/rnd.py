"""Random Network Distillation (Burda et al. 2019), with the paper's Montezuma settings (section 4).

A frozen random target network and a trained predictor both map the newest frame (84×84, normalised
and clipped) to 512 features; the predictor's squared error is the intrinsic reward, high on frames
unlike those it was trained on. PPO then optimises A = 2.0·A_ext + 1.0·A_int, each advantage from
GAE on its own stream (γ_ext 0.999 episodic, γ_int 0.99 non-episodic).

The running statistics are a small module here rather than TorchRL's `VecNorm`/`VecNormV2`: those
normalise env outputs in place inside the env pipeline with an exponential decay, while RND needs
(1) exact running moments of the last frame used only by the RND networks (the policy keeps raw
pixels), fed first by a random-action warm-up, and (2) a reward scale from the std of *discounted
intrinsic returns* across rollouts, which is not a per-step transform. As buffers they land in
checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrl.envs import EnvBase
from torchrl.objectives.value.functional import generalized_advantage_estimate

from lit_rl.models.atari_cnn import RND_FEATURES, nature_trunk, orthogonal_init

EXT_COEF = 2.0
INT_COEF = 1.0
GAMMA_EXT = 0.999
GAMMA_INT = 0.99
GAE_LAMBDA = 0.95
UPDATE_PROPORTION = 0.25
OBS_CLIP = 5.0
WARMUP_STEPS = 50


class RunningMeanStd(nn.Module):
    """Exact running mean/variance of all samples seen (Chan et al.'s parallel update), float64."""

    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold in a batch whose trailing dims match the stats' shape."""
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.var.copy_(
            (self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        )
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


class RND(nn.Module):
    """Target/predictor pair, observation and intrinsic-reward normalisers, predictor loss.

    Call order per rollout: `intrinsic_reward(next_pixels)` (raw errors), then
    `normalise_intrinsic(rewards)`, then `update_obs_stats(next_pixels)`, and `loss(pixels)` inside
    the optimisation epochs (the predictor's parameters join the PPO optimiser).
    """

    def __init__(
        self,
        feature_dim: int = RND_FEATURES,
        update_proportion: float = UPDATE_PROPORTION,
        obs_clip: float = OBS_CLIP,
        gamma_int: float = GAMMA_INT,
        frame_size: int = 84,
    ):
        super().__init__()
        self.update_proportion = update_proportion
        self.obs_clip = obs_clip
        self.gamma_int = gamma_int
        self.feature_dim = feature_dim
        self.target = nature_trunk(1, feature_dim, leaky=True)
        self.predictor = nn.Sequential(
            *nature_trunk(1, feature_dim, leaky=True),
            nn.ReLU(),
            nn.Linear(feature_dim, feature_dim),
            nn.ReLU(),
            nn.Linear(feature_dim, feature_dim),
        )
        orthogonal_init(self.target, 2**0.5)
        orthogonal_init(self.predictor, 2**0.5)
        self.target.requires_grad_(False)
        self.obs_rms = RunningMeanStd((1, frame_size, frame_size))
        self.int_return_rms = RunningMeanStd(())
        # Per-env state, sized by the first rollout; not checkpointed (a resume restarts the sum).
        self.register_buffer("discounted_int_return", torch.zeros(0), persistent=False)

    def _last_frame(self, pixels: torch.Tensor) -> torch.Tensor:
        """[*, C, 84, 84] uint8 stack → [B, 1, 84, 84] float normalised, clipped to ±obs_clip."""
        frame = pixels[..., -1:, :, :].reshape(-1, 1, *pixels.shape[-2:]).float()
        mean = self.obs_rms.mean.float()
        std = self.obs_rms.std.clamp_min(1e-8).float()
        return ((frame - mean) / std).clamp_(-self.obs_clip, self.obs_clip)

    def _errors(self, pixels: torch.Tensor) -> torch.Tensor:
        obs = self._last_frame(pixels)
        with torch.no_grad():
            target = self.target(obs)
        return (self.predictor(obs) - target).square().sum(-1)

    @torch.no_grad()
    def update_obs_stats(self, pixels: torch.Tensor) -> None:
        self.obs_rms.update(pixels[..., -1:, :, :].reshape(-1, 1, *pixels.shape[-2:]))

    @torch.no_grad()
    def intrinsic_reward(self, next_pixels: torch.Tensor) -> torch.Tensor:
        """||predictor − target||² on the newest frame of each observation, shape [*]
        (RND's code averages over the 512 features instead; the reward normaliser removes the
        constant factor)."""
        return self._errors(next_pixels).reshape(next_pixels.shape[:-3])

    @torch.no_grad()
    def normalise_intrinsic(self, rewards: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
        """Divide by the running std of discounted intrinsic returns (RND's reward normaliser).

        `rewards` is [N envs, T] with time along `time_dim`; the per-env discounted sum is carried
        across rollouts and never reset at episode ends (the intrinsic stream is non-episodic).
        """
        per_env = rewards.movedim(time_dim, -1)
        flat = per_env.reshape(-1, per_env.shape[-1]).to(torch.float64)
        if self.discounted_int_return.shape != flat.shape[:1]:
            self.discounted_int_return = torch.zeros(flat.shape[0], dtype=torch.float64)
        returns = torch.empty_like(flat)
        running = self.discounted_int_return
        for t in range(flat.shape[1]):
            running = running * self.gamma_int + flat[:, t]
            returns[:, t] = running
        self.discounted_int_return = running
        self.int_return_rms.update(returns)
        return rewards / self.int_return_rms.std.clamp_min(1e-8).to(rewards.dtype)

    def loss(self, pixels: torch.Tensor) -> torch.Tensor:
        """Predictor MSE on a random `update_proportion` of the samples (RND: keeps the predictor
        from outpacing novelty when there are many parallel envs)."""
        errors = self._errors(pixels) / self.feature_dim
        keep = (torch.rand_like(errors) < self.update_proportion).to(errors.dtype)
        return (errors * keep).sum() / keep.sum().clamp_min(1.0)


@torch.no_grad()
def warm_up_observation_stats(rnd: RND, env: EnvBase, steps: int = WARMUP_STEPS, chunk: int = 128) -> None:
    """Feed RND's observation normaliser `steps` steps of uniformly random actions per env (RND's
    start), folding in the newest frames every `chunk` steps as jcwleo's train.py does (lines
    134–147: one update per 128 steps × envs), so a long warm-up never holds all its frames."""
    td = env.reset()
    frames = []
    for step in range(steps):
        out, td = env.step_and_maybe_reset(env.rand_action(td))
        frames.append(out.get(("next", "pixels"))[..., -1:, :, :])
        if len(frames) == chunk or step == steps - 1:
            rnd.update_obs_stats(torch.stack(frames))
            frames = []


def combined_advantage(
    reward_ext: torch.Tensor,
    reward_int: torch.Tensor,
    value_ext: torch.Tensor,
    next_value_ext: torch.Tensor,
    value_int: torch.Tensor,
    next_value_int: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    gamma_ext: float = GAMMA_EXT,
    gamma_int: float = GAMMA_INT,
    lmbda: float = GAE_LAMBDA,
    ext_coef: float = EXT_COEF,
    int_coef: float = INT_COEF,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = ext_coef·A_ext + int_coef·A_int (RND eq. for two-stream PPO; paper section 4 coefs).

    GAE runs per stream: extrinsic with the episode's `done`/`terminated`, intrinsic with neither
    (non-episodic, as RND). All tensors are [*batch, T, 1] (TorchRL's layout, time at dim -2).
    Returns (advantage, value_target_ext, value_target_int).
    """
    adv_ext, target_ext = generalized_advantage_estimate(
        gamma_ext, lmbda, value_ext, next_value_ext, reward_ext, done, terminated
    )
    never = torch.zeros_like(done)
    adv_int, target_int = generalized_advantage_estimate(
        gamma_int, lmbda, value_int, next_value_int, reward_int, never, never
    )
    return ext_coef * adv_ext + int_coef * adv_int, target_ext, target_int
