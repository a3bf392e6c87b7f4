"""The default networks of the generic Gymnasium scenario: an observation encoder for flat vectors
(an MLP reads them), images (the Nature CNN) and dicts of them (their features concatenated),
then Stable-Baselines3's actor-critic heads.

The layout and parameter names follow Stable-Baselines3's policies (``ActorCriticPolicy`` for
PPO/A2C, SAC's ``Actor`` and ``ContinuousCritic``), so a policy trained there converts by renaming
keys and computes the same function here (``lit_rl.models.sb3``); a policy trained here is an SB3
policy of the same architecture. Preprocessing is SB3's: a ``Box`` is read as floats, an image
(uint8 ``Box`` of rank 3, channels first or last) is divided by 255 and put channels first, a
``Discrete`` value becomes a one-hot vector, a ``MultiBinary`` one floats.

PPO/A2C: ``PolicyNet`` (encoder → ``policy_net`` MLP → ``action_net``: logits, or the mean of a
Gaussian with state-independent ``log_std``) and ``ValueNet`` (the same encoder object → its own
``value_mlp`` → ``value_net``). The encoder is shared, as in SB3, so its parameters are behaviour
parameters that the value loss also trains. SAC: ``SquashedGaussianNet`` (encoder → ``latent_pi``
→ ``mu`` and ``log_std`` heads, log σ clamped to [−20, 2]) and ``QNet`` (its own encoder, then
``qf`` on [features, action]).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
#: SAC's log σ range (SB3's LOG_STD_MIN, LOG_STD_MAX)
LOG_STD_RANGE = (-20.0, 2.0)


def is_image(space: spaces.Space) -> bool:
    """SB3's rule: a uint8 Box of rank 3 whose values span [0, 255]."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def channels_first(shape: tuple[int, ...]) -> bool:
    """SB3's rule: the smallest dimension is the channel one (first unless it is last)."""
    return int(np.argmin(shape)) == 0


def mlp(in_features: int, hidden: list[int], activation: str) -> nn.Sequential:
    """Linear → activation for each width (SB3's ``create_mlp`` without an output layer)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), ACTIVATIONS[activation]()]
        in_features = width
    return nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """Mnih et al. 2015's convolutions → Linear(features) → ReLU, on [N, C, H, W] floats in [0, 1]
    (SB3's ``NatureCNN``: names ``cnn.0/2/4`` and ``linear.0``)."""

    def __init__(self, chw: tuple[int, int, int], features: int = 512):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(chw[0], 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *chw)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(images))


def check_readable(space: spaces.Space) -> None:
    """One line when no default network reads ``space`` (a Dict is read key by key)."""
    subs = space.spaces.values() if isinstance(space, spaces.Dict) else [space]
    for sub in subs:
        if not isinstance(sub, spaces.Discrete | spaces.Box | spaces.MultiBinary):
            raise ValueError(
                f"observation space {space} is not one lit_rl's default networks read (Box, images, "
                "Discrete, MultiBinary, or a Dict of them): give scenario.encoder your module's class path"
            )


class Reader(nn.Module):
    """One observation's preprocessing (and, for an image, its CNN) → [*batch, features]."""

    def __init__(self, space: spaces.Space, cnn_features: int):
        super().__init__()
        self.kind, self.shape = "flat", tuple(getattr(space, "shape", ()) or ())
        if isinstance(space, spaces.Discrete):
            self.kind, self.features, self.n = "onehot", int(space.n), int(space.n)
        elif is_image(space):
            self.kind, self.first = "image", channels_first(self.shape)
            chw = self.shape if self.first else (self.shape[2], self.shape[0], self.shape[1])
            self.cnn = NatureCNN(chw, cnn_features)
            self.features = cnn_features
        else:
            check_readable(space)
            self.features = int(math.prod(self.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "onehot":
            return nn.functional.one_hot(x.long(), self.n).float()
        rank = len(self.shape)
        batch = x.shape[: x.dim() - rank]
        if self.kind == "flat":
            return x.float().reshape(*batch, self.features)
        images = x.reshape(-1, *self.shape).float() / 255.0
        if not self.first:
            images = images.permute(0, 3, 1, 2)
        return self.cnn(images).reshape(*batch, self.features)


class Encoder(nn.Module):
    """Observation tensors (in the order of ``keys``) → one feature vector.

    One observation: its ``Reader`` (SB3's ``FlattenExtractor`` or ``NatureCNN`` with 512
    features). A Dict: every key's reader (images: Nature CNN with 256 features) concatenated in
    the Dict's order (SB3's ``CombinedExtractor``, names ``extractors.<key>``).
    """

    def __init__(self, observation_spaces: dict[str, spaces.Space], dict_space: bool):
        super().__init__()
        self.keys = list(observation_spaces)
        self.dict_space = dict_space
        cnn = 256 if dict_space else 512
        readers = {k: Reader(s, cnn) for k, s in observation_spaces.items()}
        if dict_space:
            self.extractors = nn.ModuleDict(readers)
        else:
            self.reader = readers[self.keys[0]]
        self.features = sum(r.features for r in readers.values())

    def forward(self, *observations: torch.Tensor) -> torch.Tensor:
        if not self.dict_space:
            return self.reader(observations[0])
        return torch.cat([self.extractors[k](x) for k, x in zip(self.keys, observations)], dim=-1)


def orthogonal_(module: nn.Module, gain: float) -> None:
    """SB3's ``ortho_init``: orthogonal weights with ``gain``, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


class PolicyNet(nn.Module):
    """PPO/A2C actor: encoder → ``policy_net`` → ``action_net``; logits (discrete) or
    (mean, σ = exp(log_std)) of a diagonal Gaussian (continuous, SB3's ``DiagGaussianDistribution``)."""

    def __init__(
        self, encoder: nn.Module, hidden: list[int], activation: str, actions: int, continuous: bool
    ):
        super().__init__()
        self.features_extractor = encoder
        self.policy_net = mlp(encoder.features, hidden, activation)
        self.action_net = nn.Linear(hidden[-1] if hidden else encoder.features, actions)
        self.continuous = continuous
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(actions))
        orthogonal_(self.features_extractor, math.sqrt(2))
        orthogonal_(self.policy_net, math.sqrt(2))
        orthogonal_(self.action_net, 0.01)

    def forward(self, *observations: torch.Tensor):
        out = self.action_net(self.policy_net(self.features_extractor(*observations)))
        if not self.continuous:
            return out
        return out, self.log_std.exp().expand_as(out)


class ValueNet(nn.Module):
    """PPO/A2C critic: the actor's encoder (the same module) → ``value_mlp`` → ``value_net``."""

    def __init__(self, encoder: nn.Module, hidden: list[int], activation: str):
        super().__init__()
        self.features_extractor = encoder
        self.value_mlp = mlp(encoder.features, hidden, activation)
        self.value_net = nn.Linear(hidden[-1] if hidden else encoder.features, 1)
        orthogonal_(self.value_mlp, math.sqrt(2))
        orthogonal_(self.value_net, 1.0)

    def forward(self, *observations: torch.Tensor) -> torch.Tensor:
        return self.value_net(self.value_mlp(self.features_extractor(*observations)))


class SquashedGaussianNet(nn.Module):
    """SAC actor: encoder → ``latent_pi`` → (``mu``, σ = exp(clamp(``log_std``))) of the pre-tanh
    Gaussian (SB3's SAC ``Actor``; the tanh and the affine map to the action bounds are the
    distribution's, TorchRL's ``TanhNormal``)."""

    def __init__(self, encoder: nn.Module, hidden: list[int], activation: str, actions: int):
        super().__init__()
        self.features_extractor = encoder
        self.latent_pi = mlp(encoder.features, hidden, activation)
        width = hidden[-1] if hidden else encoder.features
        self.mu = nn.Linear(width, actions)
        self.log_std = nn.Linear(width, actions)

    def forward(self, *observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.latent_pi(self.features_extractor(*observations))
        return self.mu(latent), self.log_std(latent).clamp(*LOG_STD_RANGE).exp()


class QNet(nn.Module):
    """SAC critic: its own encoder, then ``qf`` on [features, action scaled to [−1, 1]] → Q(s, a)
    (one of SB3's ``ContinuousCritic`` networks, which read actions as SB3's ``scale_action``
    leaves them; TorchRL's ``SACLoss`` keeps two copies and hands them env-unit actions)."""

    def __init__(
        self, encoder: nn.Module, hidden: list[int], activation: str, low: torch.Tensor, high: torch.Tensor
    ):
        super().__init__()
        self.features_extractor = encoder
        actions = low.numel()
        self.register_buffer("low", low.clone().float(), persistent=False)
        self.register_buffer("high", high.clone().float(), persistent=False)
        self.qf = nn.Sequential(
            *mlp(encoder.features + actions, hidden, activation),
            nn.Linear(hidden[-1] if hidden else encoder.features + actions, 1),
        )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *observations, action = inputs
        scaled = 2.0 * (action - self.low) / (self.high - self.low) - 1.0
        return self.qf(torch.cat([self.features_extractor(*observations), scaled], dim=-1))
