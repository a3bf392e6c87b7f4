"""Any registered Gymnasium environment as a batched TorchRL environment whose episodes start by a
named rule (one subspace of the generic ``Gymnasium`` scenario).

TorchRL's own ``GymEnv`` wraps Gymnasium's vector environments, which reset finished copies
themselves without reset options, so every later episode would start from the default start state.
Here the ``num_envs`` copies are stepped in this process, one after the other (hand-written for
that reason), and TorchRL's collector asks for resets through ``_reset``; each reset applies the
subspace's start rule:

- ``reset``: options passed to ``env.reset(options=…)`` (e.g. classic control's ``low``/``high``);
- ``env_kwargs``: keyword arguments of ``gymnasium.make`` for this subspace's copies (e.g.
  FrozenLake's ``desc`` with another start cell);
- ``sampler``: a start-state sampler, ``{class_path, init_args}``; the instance is called as
  ``sampler(env, rng)`` with the Gymnasium env and a seeded ``numpy`` generator, puts the env into
  a start state of its choosing and returns ``(observation, info)``.

Observations keep their Gymnasium dtype and layout (images stay uint8 and unscaled; the policy's
encoder scales them): a ``Box`` or ``Discrete`` space under ``observation``, a ``Dict`` space under
its own keys. Continuous actions are clipped to the action space's bounds before ``env.step``, as
Stable-Baselines3 does, so a converted policy acts as it did there. An ``info`` key the scenario
names (``visit_key``) is read every step as the subspace the frame lies in: its name, or a value
that ``visit_names`` maps to a name (e.g. AppleRetrieval's ``phase``: ``{1: close, 2: far}``); an
``info`` key named by ``success_key`` (SB3's convention: ``is_success``) marks success, and without
one no ``success`` flag (nor ``success_rate``) is reported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

#: keys TorchRL's env contract uses; a Dict observation may not use them as sub-space names
RESERVED_KEYS = {"reward", "done", "terminated", "truncated", "success", "visit", "action", "next"}
#: frames whose ``visit_key`` names no known subspace
OTHER = -1
START_RULES = ("reset", "env_kwargs", "sampler")


def import_class(class_path: str):
    """``package.module.Class`` → the class (a one-line error when it cannot be imported)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"class_path {class_path!r} cannot be imported ({error})") from None


def make_gym(env_id: str, kwargs: dict) -> gymnasium.Env:
    """``gymnasium.make`` with an unknown id turned into one line naming the setting and the fix."""
    try:
        return gymnasium.make(env_id, **kwargs)
    except gymnasium.error.Error as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(
            f"scenario.env_id = {env_id!r} is not a registered Gymnasium environment ({first}): use an id "
            "from gymnasium.pprint_registry(), or 'module:EnvId' to import the module that registers it"
        ) from None


def observation_keys(space: spaces.Space) -> dict[str, spaces.Space]:
    """The TorchRL keys of an observation space: ``observation`` or the Dict's own keys."""
    if isinstance(space, spaces.Dict):
        clash = RESERVED_KEYS & set(space.spaces)
        if clash:
            raise ValueError(f"the observation Dict uses reserved key(s) {sorted(clash)}: rename them")
        for key, sub in space.spaces.items():
            if isinstance(sub, spaces.Dict | spaces.Tuple):
                raise ValueError(f"observation {key!r} is a nested {type(sub).__name__}: flatten it")
        return dict(space.spaces)
    return {"observation": space}


def _spec(space: spaces.Space, n: int):
    if isinstance(space, spaces.Discrete):
        return Categorical(int(space.n), shape=(n,), dtype=torch.int64)
    if isinstance(space, spaces.Box):
        dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32
        if space.is_bounded("both"):
            low = torch.as_tensor(space.low).to(dtype)
            high = torch.as_tensor(space.high).to(dtype)
            return Bounded(low.expand(n, *space.shape), high.expand(n, *space.shape), dtype=dtype)
        return Unbounded(shape=(n, *space.shape), dtype=dtype)
    if isinstance(space, spaces.MultiBinary):
        return Binary(shape=(n, *space.shape), dtype=torch.float32)
    raise ValueError(
        f"observation space {space} is not one lit_rl's default networks read (Box, Discrete, "
        "MultiBinary, or a Dict of them): give scenario.encoder your own module's class path"
    )


def action_spec(space: spaces.Space, n: int | None = None):
    """TorchRL's spec of a Discrete or Box action space (``n`` copies, or one without ``n``)."""
    batch = () if n is None else (n,)
    if isinstance(space, spaces.Discrete):
        return Categorical(int(space.n), shape=batch, dtype=torch.int64)
    if isinstance(space, spaces.Box) and space.is_bounded("both"):
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        return Bounded(low.expand(*batch, *space.shape), high.expand(*batch, *space.shape))
    raise ValueError(f"action space {space} is not supported: lit_rl acts in Discrete or bounded Box spaces")


class StartRule(gymnasium.Wrapper):
    """One Gymnasium env whose every ``reset`` applies a subspace's start rule (the batched env's
    copies, and the env to train a policy on one subspace elsewhere, e.g. with Stable-Baselines3:
    ``subspace_env(env_id, make_kwargs, rule)``)."""

    def __init__(self, env: gymnasium.Env, rule: dict, seed: int = 0):
        super().__init__(env)
        self.options = rule.get("reset") or None
        sampler = rule.get("sampler")
        self.sampler = None
        if sampler is not None:
            self.sampler = import_class(sampler["class_path"])(**(sampler.get("init_args") or {}))
        self.rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if self.sampler is None:
            return self.env.reset(seed=seed, options=options or self.options)
        if seed is not None:
            self.env.reset(seed=seed)
        return self.sampler(self.env, self.rng)


def subspace_env(env_id: str, make_kwargs: dict | None, rule: dict, seed: int = 0) -> StartRule:
    """``gymnasium.make`` with the rule's ``env_kwargs``, every episode started by the rule."""
    env = make_gym(env_id, {**(make_kwargs or {}), **(rule.get("env_kwargs") or {})})
    return StartRule(env, rule, seed)


class GymnasiumBatchEnv(EnvBase):
    """``num_envs`` copies of one Gymnasium environment, each episode started by ``start_rule``.

    Args:
        env_id, make_kwargs: what ``gymnasium.make`` builds (plus the rule's ``env_kwargs``).
        num_envs: copies stepped in lock-step.
        start_rule: ``{"reset": options}``, ``{"env_kwargs": kwargs}`` or ``{"sampler":
            {"class_path": …, "init_args": {…}}}`` (see the module docstring).
        seed: the first reset of copy i uses ``seed + i``; later resets continue its RNG.
        subspaces: the scenario's subspace names (for ``visit_key`` values given as names).
        visit_key, success_key: ``info`` keys read every step (see the module docstring).
        visit_names: ``visit_key`` values → subspace names (values that are names need none).
    """

    def __init__(
        self,
        env_id: str,
        make_kwargs: dict | None,
        num_envs: int,
        start_rule: dict,
        seed: int = 0,
        subspaces: tuple[str, ...] = ("close", "far"),
        visit_key: str | None = None,
        success_key: str | None = None,
        visit_names: dict | None = None,
    ):
        super().__init__(batch_size=torch.Size([num_envs]), device="cpu")
        self.visit_names = {str(k): v for k, v in (visit_names or {}).items()}
        self.envs = [subspace_env(env_id, make_kwargs, start_rule, seed + i) for i in range(num_envs)]
        self.subspaces, self.visit_key, self.success_key = subspaces, visit_key, success_key
        self.obs_spaces = observation_keys(self.envs[0].observation_space)
        self.action_space = self.envs[0].action_space
        self._continuous = isinstance(self.action_space, spaces.Box)
        self._seed = seed
        self._first_reset = [True] * num_envs
        self._last: list[tuple[Any, dict] | None] = [None] * num_envs
        self._make_specs(num_envs)

    def _make_specs(self, n: int) -> None:
        obs = {key: _spec(space, n) for key, space in self.obs_spaces.items()}
        obs["visit"] = Unbounded(shape=(n,), dtype=torch.int64)
        self.observation_spec = Composite(obs, shape=(n,))
        self.action_spec = action_spec(self.action_space, n)
        self.reward_spec = Unbounded(shape=(n, 1))
        flags = {k: Binary(shape=(n, 1), dtype=torch.bool) for k in ("done", "terminated", "truncated")}
        if self.success_key:  # the evaluator reports success_rate only for envs that mark it
            flags["success"] = Binary(shape=(n, 1), dtype=torch.bool)
        self.full_done_spec = Composite(flags, shape=(n,))

    # --- one copy ---------------------------------------------------------------------------------
    def _reset_one(self, i: int) -> tuple[Any, dict]:
        seed = self._seed + i if self._first_reset[i] else None
        self._first_reset[i] = False
        return self.envs[i].reset(seed=seed)

    def _visit(self, info: dict) -> int:
        if self.visit_key is None or self.visit_key not in info:
            return OTHER
        value = info[self.visit_key]
        name = self.visit_names.get(str(value), value)
        return self.subspaces.index(name) if name in self.subspaces else OTHER

    def _pack(self, observations: list, infos: list[dict]) -> TensorDict:
        out = {}
        for key in self.obs_spaces:
            values = [o if key == "observation" and not isinstance(o, dict) else o[key] for o in observations]
            out[key] = torch.as_tensor(np.stack(values)).to(self.observation_spec[key].dtype)
        out["visit"] = torch.tensor([self._visit(info) for info in infos], dtype=torch.int64)
        return TensorDict(out, batch_size=self.batch_size)

    # --- TorchRL's env contract -----------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        which = range(len(self.envs)) if mask is None else mask.reshape(-1).nonzero().flatten().tolist()
        for i in which:
            self._last[i] = self._reset_one(i)
        out = self._pack([o for o, _ in self._last], [info for _, info in self._last])
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = tensordict["action"].detach().cpu().numpy()
        if self._continuous:
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        rewards, terminated, truncated, success = [], [], [], []
        for i, env in enumerate(self.envs):
            obs, reward, term, trunc, info = env.step(actions[i])
            self._last[i] = (obs, info)
            rewards.append(float(reward))
            terminated.append(bool(term))
            truncated.append(bool(trunc))
            success.append(bool(self.success_key and info.get(self.success_key, False)))
        out = self._pack([o for o, _ in self._last], [info for _, info in self._last])
        flags = {
            "terminated": torch.tensor(terminated),
            "truncated": torch.tensor(truncated),
        }
        if self.success_key:
            flags["success"] = torch.tensor(success)
        flags["done"] = flags["terminated"] | flags["truncated"]
        out.set("reward", torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1))
        for key, value in flags.items():
            out.set(key, value.unsqueeze(-1))
        return out

    def _set_seed(self, seed: int | None) -> None:
        """Seeds are given at construction (``seed``): copy i's first reset uses ``seed + i``."""

    def close(self, *, raise_if_closed: bool = True) -> None:
        for env in self.envs:
            env.close()
        super().close(raise_if_closed=raise_if_closed)
