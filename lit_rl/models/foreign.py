"""π* trained elsewhere, loaded into the policy a scenario builds (``model.pretrained``):

- a Stable-Baselines3 ``.zip`` (PPO, A2C, SAC; ``lit_rl.models.sb3``) into the Gymnasium
  scenario's SB3-shaped networks: actor and critic (SAC: both Q networks, their targets and the
  entropy coefficient);
- a torch state dict (a ``.pt`` file holding only ``{name: tensor}``, as
  ``torch.save(net.state_dict(), path)`` writes) of the actor's network: the module the scenario
  builds (``scenario.encoder`` for your own encoder, or the default ``PolicyNet``); the critic
  keeps its fresh initialisation.

Every file is read with ``torch.load(weights_only=True)``; nothing in it is unpickled.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from lit_rl.models.sb3 import SB3Policy, ppo_weights, read_sb3_zip, sac_weights

log = logging.getLogger(__name__)

#: where the actor's and critic's networks sit in the policy's state dict
ACTOR_NET, CRITIC_NET = "actor.module.0.module.", "critic.module."
SAC_PREFIX = "sac_loss."


def is_state_dict(payload) -> bool:
    return (
        isinstance(payload, dict)
        and bool(payload)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items())
    )


def load_actor_state_dict(path: Path, payload: dict, policy: nn.Module) -> None:
    """A plain state dict of the actor's network into it (strict: every name and shape)."""
    net = policy["actor"].module[0].module
    _load(path, net, payload, "the actor network (scenario.encoder / the default PolicyNet)")
    log.warning("%s: the actor is π*'s; the critic starts from a fresh initialisation", path)


def load_sb3(path: Path, policy: nn.Module, description: dict) -> None:
    """An SB3 zip into the Gymnasium scenario's policy, after checking it fits (one line if not)."""
    sb3 = read_sb3_zip(path)
    if description.get("scenario") != "gymnasium":
        raise ValueError(
            f"model.pretrained = {path}: Stable-Baselines3 policies load into the Gymnasium scenario "
            f"(lit_rl.scenarios.Gymnasium), not {description.get('scenario')!r}"
        )
    wanted = "sac" if sb3.algorithm == "sac" else "ppo"
    if description["algorithm"] != wanted:
        raise ValueError(
            f"model.pretrained = {path} is an SB3 {sb3.algorithm.upper()} policy: set scenario "
            f"algorithm: {wanted} (and the matching trainer preset)"
        )
    if description.get("encoder"):
        raise ValueError(
            f"model.pretrained = {path}: SB3 policies use the default encoder: unset scenario.encoder"
        )
    if (sb3.hidden, sb3.activation) != (description["hidden"], description["activation"]):
        raise ValueError(
            f"model.pretrained = {path} has hidden {sb3.hidden} with {sb3.activation}, the scenario "
            f"{description['hidden']} with {description['activation']}: set scenario hidden: "
            f"{sb3.hidden} and activation: {sb3.activation}"
        )
    check_action_space(sb3, policy["actor"].spec["action"])
    state = policy.state_dict()
    if sb3.algorithm == "sac":
        _fill_sac(sb3, state)
    else:
        actor, critic = ppo_weights(sb3)
        state.update({ACTOR_NET + k: v for k, v in actor.items()})
        state.update({CRITIC_NET + k: v for k, v in critic.items()})
    _load(path, policy, state, "the scenario's policy")


def _fill_sac(sb3: SB3Policy, state: dict) -> None:
    nets = sac_weights(sb3)
    for key, value in nets["actor"].items():
        state[ACTOR_NET + key] = value
        state[f"{SAC_PREFIX}actor_network_params.module.0.module.{key}"] = value
    for name in nets["qf0"]:
        stacked = torch.stack([nets["qf0"][name], nets["qf1"][name]])
        state[f"{SAC_PREFIX}qvalue_network_params.module.{name}"] = stacked
        target = torch.stack([nets["target0"][name], nets["target1"][name]])
        state[f"{SAC_PREFIX}target_qvalue_network_params.module.{name}"] = target
    if sb3.log_ent_coef is not None:
        state[f"{SAC_PREFIX}log_alpha"] = sb3.log_ent_coef.reshape(state[f"{SAC_PREFIX}log_alpha"].shape)


def _numbers(text) -> list[float]:
    return [float(x) for x in re.findall(r"-?inf|-?\d+\.?\d*(?:e[-+]?\d+)?", str(text))]


def check_action_space(sb3: SB3Policy, spec) -> None:
    """The policy's action space (SB3's plain JSON fields) equals the env's (one line if not)."""
    space = sb3.action_space
    kind = str(space.get(":type:", ""))
    if "Discrete" in kind:
        given, ok = f"Discrete({space.get('n')})", hasattr(spec, "n") and int(space.get("n", -1)) == spec.n
        env = f"Discrete({spec.n})" if hasattr(spec, "n") else f"Box{tuple(spec.shape)}"
    elif "Box" in kind:
        shape = tuple(space.get("_shape") or ())
        given = f"Box{shape} in [{space.get('low_repr')}, {space.get('high_repr')}]"
        ok = not hasattr(spec, "n") and tuple(spec.shape) == shape
        if ok:
            low, high = spec.space.low.flatten().tolist(), spec.space.high.flatten().tolist()
            pairs = zip(_numbers(space.get("low")), low) if _numbers(space.get("low")) else ()
            ok = all(abs(a - b) < 1e-5 for a, b in pairs)
            pairs = zip(_numbers(space.get("high")), high) if _numbers(space.get("high")) else ()
            ok = ok and all(abs(a - b) < 1e-5 for a, b in pairs)
        env = f"Discrete({spec.n})" if hasattr(spec, "n") else f"Box{tuple(spec.shape)}"
    else:
        raise ValueError(f"model.pretrained = {sb3.path}: action space {kind or '?'} is not supported")
    if not ok:
        raise ValueError(
            f"model.pretrained = {sb3.path} acts in {given}, but the environment in {env}: "
            "use a policy trained on this environment (or fix scenario.env_id / make_kwargs)"
        )


def _load(path: Path, module: nn.Module, state: dict, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        shape = re.search(r"size mismatch for ([^:]+): copying a param with shape (\S+ \S+)", detail)
        missing = re.search(r"(Missing key\(s\)|Unexpected key\(s\)) in state_dict: ([^.]+\.[^ ]+)", detail)
        if shape:
            detail = f"{shape.group(1)} has shape {shape.group(2)} in the file"
        elif missing:
            detail = f"{missing.group(1).lower()} {missing.group(2).rstrip(',')}"
        raise ValueError(
            f"model.pretrained = {path} does not fit {what} ({detail}): the observation or action "
            "space, or the network settings, differ from the policy's"
        ) from None
