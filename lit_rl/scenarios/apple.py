"""AppleRetrieval as a scenario: CLOSE = phase 1 from x = 0, FAR = phase 2 at the apple."""

from __future__ import annotations

from jsonargparse.typing import PositiveFloat, PositiveInt
from tensordict import TensorDictBase
from torchrl.envs import EnvBase

from lit_rl.envs.apple import EPISODE_CAP, PHASE_TO_APPLE, AppleRetrievalEnv
from lit_rl.models.policies import (
    LogisticPolicyNet,
    make_actor,
    make_critic,
    make_mlp_policy_net,
)
from lit_rl.scenarios.base import Policy, Scenario

POLICIES = ("logistic", "mlp")


class AppleRetrieval(Scenario):
    """The paper's didactic corridor (appendix A) with the logistic actor by default.

    Args:
        length: corridor length M; forgetting grows with M (FAR is reached later).
        scale: observation scale c; forgetting grows as c shrinks (the shared bias dominates).
        policy: ``logistic`` (the paper's σ(w·o + b)) or ``mlp``.
        hidden: width of the MLP policy and of the critic.
    """

    name = "apple"
    max_episode_steps = EPISODE_CAP

    def __init__(
        self,
        length: PositiveInt = 30,
        scale: PositiveFloat = 0.1,
        policy: str = "logistic",
        hidden: PositiveInt = 32,
    ):
        if policy not in POLICIES:
            raise ValueError(f"unknown apple policy {policy!r}: choose one of {POLICIES}")
        self.length, self.scale, self.policy, self.hidden = length, scale, policy, hidden

    def make_env(self, num_envs: int, start: str, seed: int, training: bool = False) -> EnvBase:
        self.check_start(start)
        env = AppleRetrievalEnv(num_envs, self.length, self.scale, start=start)
        env.set_seed(seed)
        return env

    def make_policy(self) -> Policy:
        spec = AppleRetrievalEnv(1, self.length, self.scale).action_spec
        if self.policy == "logistic":
            net = LogisticPolicyNet()
        else:
            net = make_mlp_policy_net(1, 2, self.hidden, depth=2)
        actor = make_actor(net, ["observation"], spec)
        critic = make_critic("state_features", 3, self.hidden)
        return Policy(actor=actor, critic=critic)

    def visitation(self, batch: TensorDictBase) -> dict[str, float]:
        close = (batch["phase"] == PHASE_TO_APPLE).float().mean().item()
        return {"close": close, "far": 1.0 - close}

    def describe(self) -> dict:
        return {"scenario": self.name, "policy": self.policy, "hidden": self.hidden}
