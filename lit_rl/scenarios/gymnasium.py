"""Any registered Gymnasium environment as a scenario, configured from YAML alone (docs/your_env.md).

```yaml
model:
  scenario:
    class_path: lit_rl.scenarios.Gymnasium
    init_args:
      env_id: FrozenLake-v1
      make_kwargs: {map_name: 8x8, is_slippery: false}
      subspaces:                      # each: how its episodes start (one rule)
        close: {reset: null}          # the environment's own start
        far: {env_kwargs: {desc: [...]}}
```

Each subspace names one start rule (``lit_rl.envs.gymnasium_env``): ``reset`` options,
``env_kwargs`` for ``gymnasium.make``, or a ``sampler`` class path; ``close`` and ``far`` are
required and any number more may follow. The default policy is Stable-Baselines3's architecture
for the trainer it serves (``algorithm``): PPO/A2C's actor and value networks (MLP widths
``hidden``, default 64 × 64 tanh; none after a single image's CNN) or SAC's squashed-Gaussian
actor and Q network (default 256 × 256 ReLU), over an encoder that reads flat vectors, images and
dicts of them (``lit_rl.models.gym_networks``), or over the user's own encoder (``encoder``: class path). π*
comes from ``model.pretrained``: a lit_rl export, a Stable-Baselines3 ``.zip`` or a state dict of
the actor network (``lit_rl.models.foreign``).

Visitation (the share of training frames in each subspace) needs the environment to say where a
frame is: ``visit_key`` names an ``info`` key holding the subspace's name, or a value
``visit_names`` maps to one. Without it
the shares are unknown, which the log says once.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs import EnvBase
from torchrl.modules import IndependentNormal, ProbabilisticActor, TanhNormal, ValueOperator

from lit_rl.envs.gymnasium_env import (
    OTHER,
    START_RULES,
    GymnasiumBatchEnv,
    action_spec,
    import_class,
    make_gym,
    observation_keys,
)
from lit_rl.models.gym_networks import (
    ACTIVATIONS,
    Encoder,
    PolicyNet,
    QNet,
    SquashedGaussianNet,
    ValueNet,
    check_readable,
    is_image,
)
from lit_rl.scenarios.base import Policy, Scenario

log = logging.getLogger(__name__)

#: SB3's default widths and activations per algorithm
DEFAULT_NETWORK = {"ppo": ([64, 64], "tanh"), "sac": ([256, 256], "relu")}


def check_subspaces(subspaces: dict | None) -> dict[str, dict]:
    """Every subspace has exactly one known start rule; ``close`` and ``far`` exist."""
    subspaces = dict(subspaces or {})
    for required in ("close", "far"):
        if required not in subspaces:
            raise ValueError(
                f"scenario.subspaces has no {required!r}: give close and far each a start rule "
                f"({', '.join(START_RULES)}), e.g. {required}: {{reset: {{...}}}}"
            )
    for name, rule in subspaces.items():
        rule = dict(rule or {})
        given = [key for key in rule if key in START_RULES]
        unknown = [key for key in rule if key not in START_RULES]
        if unknown or len(given) != 1:
            raise ValueError(
                f"scenario.subspaces.{name} = {rule or None} has no start rule: give exactly one of "
                f"{', '.join(START_RULES)} (reset: null starts where the environment itself does)"
            )
        if given == ["sampler"] and not (rule["sampler"] or {}).get("class_path"):
            raise ValueError(f"scenario.subspaces.{name}.sampler needs a class_path")
        subspaces[name] = rule
    return subspaces


class Gymnasium(Scenario):
    """A registered Gymnasium environment with named start subspaces (see the module docstring).

    Args:
        env_id: the Gymnasium id (``CartPole-v1``, ``module:Id`` to import a registering module).
        make_kwargs: keyword arguments of ``gymnasium.make`` for every subspace.
        subspaces: ``name: {reset | env_kwargs | sampler: …}``; ``close`` and ``far`` required.
        pretraining_subspace: where π* was trained (its rollouts stand in for the pre-training
            data of BC and EWC).
        max_episode_steps: evaluation episode cap (default: the environment's time limit).
        algorithm: ``ppo`` (PPO/A2C networks, discrete or continuous actions) or ``sac``
            (continuous actions; the preset's model is then ``SACFineTuning``).
        hidden, activation: MLP widths and activation (default: SB3's for ``algorithm``).
        encoder: ``{class_path, init_args}`` of your own observation encoder, built as
            ``Class(observation_space=<the Gymnasium space>, **init_args)``, called with the
            observation tensors (``observation``, or a Dict's keys in order) and exposing its
            output width as ``features`` (or SB3's ``features_dim``).
        visit_key: ``info`` key naming the subspace a frame is in (visitation); ``None``: unknown.
        visit_names: that key's values → subspace names, when they are not the names themselves.
        success_key: ``info`` key marking success (SB3's ``is_success``); ``None``: no success rate.
    """

    name = "gymnasium"

    def __init__(
        self,
        env_id: str,
        make_kwargs: dict | None = None,
        subspaces: dict | None = None,
        pretraining_subspace: str = "far",
        max_episode_steps: int | None = None,
        algorithm: Literal["ppo", "sac"] = "ppo",
        hidden: list[int] | None = None,
        activation: str | None = None,
        encoder: dict | None = None,
        visit_key: str | None = None,
        visit_names: dict | None = None,
        success_key: str | None = None,
    ):
        self.env_id, self.make_kwargs = env_id, dict(make_kwargs or {})
        self.rules = check_subspaces(subspaces)
        self.subspaces = tuple(self.rules)
        if pretraining_subspace not in self.subspaces:
            raise ValueError(
                f"scenario.pretraining_subspace = {pretraining_subspace!r} is not a subspace: "
                f"choose one of {self.subspaces}"
            )
        self.pretraining_subspace = pretraining_subspace
        self.algorithm = algorithm
        self.encoder = encoder
        self.visit_key, self.success_key = visit_key, success_key
        self.visit_names = dict(visit_names or {})
        probe = make_gym(env_id, self.make_kwargs)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        if encoder is None:
            check_readable(self.observation_space)
        default_hidden, default_activation = DEFAULT_NETWORK[algorithm]
        if algorithm == "ppo" and encoder is None and is_image(self.observation_space):
            default_hidden = []  # SB3's CnnPolicy: the action and value heads read the CNN directly
        self.hidden = [int(h) for h in (default_hidden if hidden is None else hidden)]
        self.activation = activation or default_activation
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"scenario.activation = {self.activation!r} is unknown: choose one of {sorted(ACTIVATIONS)}"
            )
        spec_steps = probe.spec.max_episode_steps if probe.spec is not None else None
        probe.close()
        self.max_episode_steps = int(max_episode_steps or spec_steps or 0)
        if not self.max_episode_steps:
            raise ValueError(
                f"{env_id} has no time limit: set scenario.max_episode_steps (evaluation episodes' cap)"
            )
        action_spec(self.action_space)  # an unsupported action space fails here, in one line
        if algorithm == "sac" and not isinstance(self.action_space, spaces.Box):
            raise ValueError(
                f"scenario.algorithm = sac needs continuous actions, but {env_id} acts in "
                f"{self.action_space}: use algorithm: ppo"
            )
        self._warned_visitation = False

    # --- environments ---------------------------------------------------------------------------
    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        self.check_start(start)
        return GymnasiumBatchEnv(
            self.env_id, self.make_kwargs, num_envs, self.rules[start], seed,
            self.subspaces, self.visit_key, self.success_key, self.visit_names,
        )  # fmt: skip

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        """Share of the batch's frames per subspace from ``visit_key`` (empty when unknown)."""
        visit = batch.get("visit", None)
        if self.visit_key is None or visit is None:
            if not self._warned_visitation:
                log.warning(
                    "visitation of %s is unknown: set scenario.visit_key to an info key naming the "
                    "subspace a frame lies in", self.env_id,
                )  # fmt: skip
                self._warned_visitation = True
            return {}
        visit = visit.reshape(-1)
        shares = {name: (visit == i).float().mean().item() for i, name in enumerate(self.subspaces)}
        shares["other"] = (visit == OTHER).float().mean().item()
        return shares

    # --- policy ---------------------------------------------------------------------------------
    def _encoder(self) -> nn.Module:
        keyed = observation_keys(self.observation_space)
        if self.encoder is None:
            return Encoder(keyed, isinstance(self.observation_space, spaces.Dict))
        module = import_class(self.encoder["class_path"])(
            observation_space=self.observation_space, **(self.encoder.get("init_args") or {})
        )
        width = getattr(module, "features", None) or getattr(module, "features_dim", None)
        if not isinstance(width, int):
            raise ValueError(
                f"scenario.encoder {self.encoder['class_path']} has no integer `features` (or "
                "`features_dim`) attribute giving its output width"
            )
        module.features = width
        return module

    @property
    def in_keys(self) -> list[str]:
        return list(observation_keys(self.observation_space))

    @property
    def continuous(self) -> bool:
        return isinstance(self.action_space, spaces.Box)

    def make_policy(self) -> Policy:
        spec = action_spec(self.action_space)
        actions = int(spec.shape[-1]) if self.continuous else int(self.action_space.n)
        if self.algorithm == "sac":
            return self._sac_policy(spec, actions)
        encoder = self._encoder()
        net = PolicyNet(encoder, self.hidden, self.activation, actions, self.continuous)
        critic = ValueOperator(ValueNet(encoder, self.hidden, self.activation), in_keys=self.in_keys)
        if self.continuous:
            module = TensorDictModule(net, in_keys=self.in_keys, out_keys=["loc", "scale"])
            actor = ProbabilisticActor(
                module, in_keys=["loc", "scale"], out_keys=["action"], spec=spec,
                distribution_class=IndependentNormal, return_log_prob=True,
            )  # fmt: skip
        else:
            module = TensorDictModule(net, in_keys=self.in_keys, out_keys=["logits"])
            actor = ProbabilisticActor(
                module, in_keys=["logits"], out_keys=["action"], spec=spec,
                distribution_class=torch.distributions.Categorical, return_log_prob=True,
            )  # fmt: skip
        return Policy(actor=actor, critic=critic)

    def _sac_policy(self, spec, actions: int) -> Policy:
        net = SquashedGaussianNet(self._encoder(), self.hidden, self.activation, actions)
        actor = ProbabilisticActor(
            TensorDictModule(net, in_keys=self.in_keys, out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], out_keys=["action"], spec=spec, distribution_class=TanhNormal,
            distribution_kwargs={"low": spec.space.low, "high": spec.space.high, "safe_tanh": False},
            return_log_prob=False,
        )  # fmt: skip
        qnet = QNet(self._encoder(), self.hidden, self.activation, spec.space.low, spec.space.high)
        critic = ValueOperator(qnet, in_keys=[*self.in_keys, "action"])
        return Policy(actor=actor, critic=critic)

    def describe(self) -> dict:
        return {
            "scenario": self.name,
            "env_id": self.env_id,
            "algorithm": self.algorithm,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "encoder": None if self.encoder is None else str(self.encoder.get("class_path")),
        }
