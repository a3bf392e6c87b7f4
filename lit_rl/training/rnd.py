"""PPO + RND (Burda et al. 2019) on top of `PPOFineTuning`, for Montezuma's Revenge (paper §4).

Only the three hooks change; collection, retention terms, logging and the frame budget stay as in
`PPOFineTuning`:

- ``compute_advantage``: intrinsic reward = RND prediction error on the next frame, divided by the
  running std of discounted intrinsic returns; GAE per stream (extrinsic γ 0.999 episodic,
  intrinsic γ 0.99 non-episodic), A = 2·A_ext + 1·A_int (`lit_rl.models.rnd.combined_advantage`).
  Both streams read the values the collection pass stored (the collection policy runs the value
  heads on the features the actor just computed, as jcwleo's ``get_action`` returns policy and
  both values from one forward); the critic runs only on the next states no stored value covers:
  each row's last next-state and the true final state of every episode that ended in the row
  (the intrinsic stream never ends, so it bootstraps from that state even after a game over).
- the critic loss covers both value heads at once: the PPO loss sees the critic's two heads as one
  two-column value (``state_values``) against a two-column ``value_target`` (the l2 loss averages
  the two columns). When actor and critic share their trunk, the loss's critic is only the value
  heads: TorchRL's PPO loss runs the actor first on the same minibatch TensorDict, so the heads read
  the ``hidden`` features (with their graph) it just computed, and the trunk runs once instead of
  twice per minibatch (same gradients; 1.7× faster; tests/test_montezuma_scenario.py checks both).
- ``extra_losses``: RND predictor loss on a random 25 % of the minibatch (update proportion).

The observation normaliser is warmed up with ``obs_warmup_steps`` random-action steps of every
training env before the first update; its statistics are buffers, so checkpoints carry them and a
resumed run does not warm up again.

Advantages are not normalised per minibatch (jcwleo's agents.py lines 119–127 use the raw
advantages; its config.conf says ``UseNorm = False``), and Adam's ε is torch's default 1e-8
(agents.py line 50 passes only the learning rate); both are settings (``rnd.normalize_advantage``,
``rnd.adam_eps``) because the PPO trainer underneath normalises and uses ε = 1e-7.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from jsonargparse.typing import PositiveFloat
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.models.rnd import (
    EXT_COEF,
    GAMMA_INT,
    INT_COEF,
    RND,
    UPDATE_PROPORTION,
    WARMUP_STEPS,
    combined_advantage,
    warm_up_observation_stats,
)
from lit_rl.scenarios.base import Scenario
from lit_rl.training.ppo import PPOFineTuning
from lit_rl.training.ppo_loss import make_ppo_loss, shared_trunk_critic
from lit_rl.training.settings import settings


def rnd_path(policy_path: str | Path) -> Path:
    """Where the RND networks and normalisers of an exported policy live: ``π*.pt`` → ``π*.rnd.pt``."""
    return Path(policy_path).with_suffix(".rnd.pt")


VALUE_PAIR = "state_values"
#: the extrinsic and intrinsic values the actor-critic writes
VALUE_KEYS = ("state_value", "state_value_int")
TARGET_PAIR = "value_target"


class _Concat(nn.Module):
    def forward(self, extrinsic: torch.Tensor, intrinsic: torch.Tensor) -> torch.Tensor:
        return torch.cat([extrinsic, intrinsic], dim=-1)


@dataclass
class RNDSettings:
    """RND's own settings (defaults: the paper's agent, jcwleo's config).

    Attributes:
        ext_coef, int_coef: weights of the extrinsic and intrinsic advantages (2.0, 1.0).
        gamma_int: intrinsic discount (0.99); ``advantage.gamma`` is the extrinsic one.
        update_proportion: share of each minibatch the RND predictor trains on (0.25).
        obs_warmup_steps: random-action steps per env that seed the observation normaliser (50).
        clip_extrinsic_reward: clip game rewards to [-1, 1] as RND does (scores are 100s–1000s).
        normalize_advantage: standardise advantages per minibatch (off in the paper's agent).
        adam_eps: Adam's ε (the paper's agent: torch's default, 1e-8).
    """

    ext_coef: float = EXT_COEF
    int_coef: float = INT_COEF
    gamma_int: float = GAMMA_INT
    update_proportion: float = UPDATE_PROPORTION
    obs_warmup_steps: int = WARMUP_STEPS
    clip_extrinsic_reward: bool = True
    normalize_advantage: bool = False
    adam_eps: PositiveFloat = 1e-8


class RNDFineTuning(PPOFineTuning):
    """`PPOFineTuning` with RND exploration and two value streams (paper section 4).

    Args (beyond `PPOFineTuning`'s): ``rnd``, RND's own settings (``RNDSettings``).
    """

    def __init__(self, scenario: Scenario, *, rnd: RNDSettings = RNDSettings(), **kwargs):
        self.rnd_settings = settings(RNDSettings, rnd)
        super().__init__(scenario=scenario, **kwargs)
        if self.loss.value_clip is not None or self.loss.normalize_returns:
            raise ValueError(
                "model.loss.value_clip and model.loss.normalize_returns are not supported with RND's "
                "two value streams: remove them from the Montezuma config"
            )
        s = self.rnd_settings
        self.rnd = RND(update_proportion=s.update_proportion, gamma_int=s.gamma_int)
        self.register_buffer("obs_warmed_up", torch.tensor(False))
        critic_pair = TensorDictSequential(
            shared_trunk_critic(self.policy["actor"], self.policy["critic"]),
            TensorDictModule(_Concat(), in_keys=["state_value", "state_value_int"], out_keys=[VALUE_PAIR]),
        )
        self.ppo_loss = make_ppo_loss(
            self.policy["actor"],
            critic_pair,
            clip_epsilon=self.loss.clip_epsilon,
            critic_coef=self.loss.critic_coef,
            entropy_coef=self.entropy_coef,
        )
        self.ppo_loss.set_keys(value=VALUE_PAIR, value_target=TARGET_PAIR)
        self.ppo_loss.normalize_advantage = s.normalize_advantage
        pretrained = self.hparams.pretrained
        if pretrained is not None and rnd_path(pretrained).is_file():
            self._load_pretrained_rnd(rnd_path(pretrained))

    def _load_pretrained_rnd(self, path: Path) -> None:
        """π*'s RND and observation statistics, if the file was written with this very π*
        (a file left beside a π* exported later is ignored with a warning)."""
        try:
            load_policy(path, self.rnd, self._rnd_description())
        except ValueError:
            warnings.warn(f"{path} does not match this π* (or is unreadable): RND restarts", stacklevel=2)
            return
        self.obs_warmed_up.fill_(True)

    def _rnd_description(self) -> dict:
        """The scenario's model description plus a digest of the policy weights it belongs to."""
        digest = hashlib.sha1()
        for value in self.policy.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        return {**self.scenario.describe(), "part": "rnd", "policy_sha1": digest.hexdigest()}

    # --- lifecycle ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        steps = self.rnd_settings.obs_warmup_steps
        if not bool(self.obs_warmed_up) and steps > 0:
            c = self.collection
            env = self.scenario.make_env(c.num_envs, c.start, self._env_seed() + 500)
            warm_up_observation_stats(self.rnd, env, steps)
            env.close()
            self.obs_warmed_up.fill_(True)

    def on_fit_end(self) -> None:
        """Export π* and, beside it, its RND networks and normalisers, so fine-tuning continues
        the same exploration bonus instead of starting RND afresh."""
        super().on_fit_end()
        if self.export.policy and self.trainer.is_global_zero:
            save_policy(rnd_path(self.export.policy), self.rnd, self._rnd_description())

    def configure_optimizers(self):
        """The trainer's optimiser with RND's Adam ε (read by Adam from each group at every step)."""
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        if self.optimisation.optimizer == "adam":
            for group in optimizer.param_groups:
                group["eps"] = self.rnd_settings.adam_eps
        return configured

    def _collection_policy(self):
        """The trainer's collection policy with the value heads right after the actor, so every
        collected frame carries ``state_value`` and ``state_value_int`` from the same trunk pass."""
        policy = super()._collection_policy()
        heads = shared_trunk_critic(self.policy["actor"], self.policy["critic"])
        return TensorDictSequential(policy.module[0], heads, *policy.module[1:])

    def parameter_groups(self) -> list[dict]:
        """The policy's groups plus the RND predictor's (the target network never trains)."""
        return [
            *super().parameter_groups(),
            {"params": list(self.rnd.predictor.parameters()), "lr": self.optimisation.lr},
        ]

    # --- hooks ----------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_advantage(self, batch: TensorDictBase) -> None:
        """Two-stream GAE on the [envs, time] batch; writes ``advantage``, the two-column
        ``value_target`` and ``reward_int`` (normalised intrinsic reward, for logging)."""
        s, advantage = self.rnd_settings, self.advantage
        if VALUE_KEYS[1] not in batch.keys():  # frames from a policy that stored no values
            batch.update(self.policy["critic"](batch.select("pixels").clone(False)).select(*VALUE_KEYS))
        next_ext, next_int = self._next_value_pair(batch)
        next_pixels = batch["next", "pixels"]
        raw_int = self.rnd.intrinsic_reward(next_pixels)
        reward_int = self.rnd.normalise_intrinsic(raw_int, time_dim=1).unsqueeze(-1)
        self.rnd.update_obs_stats(next_pixels)
        reward_ext = batch["next", "reward"]
        if s.clip_extrinsic_reward:
            reward_ext = reward_ext.clamp(-1.0, 1.0)
        advantage, target_ext, target_int = combined_advantage(
            reward_ext,
            reward_int,
            batch["state_value"],
            next_ext,
            batch["state_value_int"],
            next_int,
            batch["next", "done"],
            batch["next", "terminated"],
            gamma_ext=advantage.gamma,
            gamma_int=s.gamma_int,
            lmbda=advantage.gae_lambda,
            ext_coef=s.ext_coef,
            int_coef=s.int_coef,
        )
        batch.set("advantage", advantage)
        batch.set(TARGET_PAIR, torch.cat([target_ext, target_int], dim=-1))
        batch.set("reward_int", reward_int)
        if self._trainer is None:
            return
        self.log_dict(
            {
                "train/reward_int": reward_int.mean(),
                "train/reward_int_raw": raw_int.mean(),
                "train/reward_ext": batch["next", "reward"].mean(),
            },
            on_step=True,
            batch_size=1,
        )

    def _next_value_pair(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """V_ext(s_{t+1}) and V_int(s_{t+1}) for every frame of an [envs, time] batch: the stored
        values of the row's following frame, and the critic on the next states that frame is not
        (each row's last step and every step that ended an episode, whose true final state the
        env reports in ``next``; terminated ones too, since the intrinsic stream bootstraps
        through game over)."""
        needed = batch["next", "done"].reshape(batch.shape).clone()
        needed[:, -1] = True
        bootstrap = self.policy["critic"](batch["next"][needed].select("pixels").clone(False))
        out = []
        for key in VALUE_KEYS:
            value = batch[key]
            following = torch.cat([value[:, 1:], torch.zeros_like(value[:, :1])], dim=1)
            following[needed] = bootstrap[key].to(value.dtype)
            out.append(following)
        return out[0], out[1]

    def extra_losses(self, minibatch: TensorDictBase) -> dict[str, torch.Tensor]:
        """RND predictor loss on the next frames (Burda et al. 2019, eq. for the predictor MSE)."""
        return {"loss_rnd": self.rnd.loss(minibatch["next", "pixels"])}
