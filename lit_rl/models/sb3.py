"""Stable-Baselines3 ``.zip`` policies (PPO, A2C, SAC; MLP, CNN and multi-input policies) as
lit_rl's actor and critic, computing the same function (tests/test_sb3_conversion.py compares the
action distributions with SB3's own).

SB3's zip (``stable_baselines3.common.save_util.save_to_zip_file``) holds ``data`` (JSON; the
values JSON cannot hold are cloudpickled, base64-encoded under ``:serialized:``, next to their
JSON-able first-level attributes), ``policy.pth`` (the policy's state dict), ``pytorch_variables.pth``
(SAC's ``log_ent_coef``) and the optimisers' states. SB3's own loader unpickles the
``:serialized:`` fields and loads the ``.pth`` files with full unpickling, so a file from someone
else could run code. This reader is hand-written for that reason: it reads the tensors with
``torch.load(weights_only=True)`` and only the plain JSON fields (never a ``:serialized:`` one),
and takes the rest from the weights' names and shapes:

- the algorithm from the policy class's module (``common.policies``: PPO/A2C's
  ``ActorCriticPolicy`` family; ``sac.policies``: SAC) and PPO's ``clip_range``;
- the policy class from the features extractor's weights (none: MLP, ``cnn``: Nature CNN,
  ``extractors``: multi-input);
- the activation from ``policy_kwargs``' plain ``activation_fn`` text (SB3's default otherwise),
  the MLP widths from the weight shapes.

Anything else (gSDE, DQN/TD3, a custom extractor, unnormalised images, separate CNN extractors
for PPO's actor and critic) is refused in one line. The ``sb3`` extra
(``pip install 'lit_rl[sb3]'``) is required to read these files although the reader does not
import SB3: it pins the SB3 version whose zip layout this reader was checked against, and π* is
trained with it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

INSTALL_HINT = "pip install 'lit_rl[sb3]'"
#: SB3's ``activation_fn`` class → lit_rl's activation name
ACTIVATION_NAMES = {"Tanh": "tanh", "ReLU": "relu", "ELU": "elu", "LeakyReLU": "leaky_relu"}
DEFAULT_ACTIVATION = {"ppo": "tanh", "a2c": "tanh", "sac": "relu"}


@dataclass
class SB3Policy:
    """What a zip holds, read without unpickling."""

    path: Path
    algorithm: str  # ppo | a2c | sac
    kind: str  # mlp | cnn | multi
    activation: str
    hidden: list[int]
    action_space: dict
    weights: dict[str, torch.Tensor]
    log_ent_coef: torch.Tensor | None


def _refuse(path: Path, why: str) -> ValueError:
    return ValueError(f"model.pretrained = {path}: {why}")


def _tensors(archive: zipfile.ZipFile, name: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything that would need unpickling
        cause = str(error).strip().splitlines()[0][:160]
        raise _refuse(
            path, f"{name} is not plain tensors and would need unpickling, refused ({cause})"
        ) from None
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise _refuse(path, f"{name} is not a dict of tensors")
    return payload


def _plain(field) -> dict:
    """A ``data`` field's JSON-able attributes (the ``:serialized:`` pickle is never decoded)."""
    if not isinstance(field, dict):
        return {}
    return {k: v for k, v in field.items() if k != ":serialized:"}


def read_sb3_zip(path: str | Path) -> SB3Policy:
    """Read an SB3 zip without running any code from it (see the module docstring)."""
    path = Path(path)
    if importlib.util.find_spec("stable_baselines3") is None:
        raise _refuse(path, f"Stable-Baselines3 files need the sb3 extra: {INSTALL_HINT}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise _refuse(path, f"not a readable zip ({error})") from None
    with archive:
        names = set(archive.namelist())
        if not {"data", "policy.pth"} <= names:
            raise _refuse(path, "not a Stable-Baselines3 save (no `data` and `policy.pth` inside)")
        data = json.loads(archive.read("data"))
        weights = _tensors(archive, "policy.pth", path)
        variables = (
            _tensors(archive, "pytorch_variables.pth", path) if "pytorch_variables.pth" in names else {}
        )
    algorithm = _algorithm(path, data)
    kwargs = (
        _plain(data.get("policy_kwargs"))
        if ":serialized:" in str(data.get("policy_kwargs"))
        else (data.get("policy_kwargs") or {})
    )
    if data.get("use_sde") or kwargs.get("use_sde"):
        raise _refuse(path, "gSDE policies (use_sde=True) are not supported: train with use_sde=False")
    if kwargs.get("normalize_images") is False:
        raise _refuse(path, "policies with normalize_images=False are not supported")
    actor_prefix = "actor." if algorithm == "sac" else ""
    kind = _kind(path, weights, actor_prefix)
    if algorithm != "sac" and not _shared_extractor(weights):
        raise _refuse(path, "PPO/A2C policies with share_features_extractor=False are not supported")
    if algorithm == "sac" and any(k.startswith("critic.qf2.") for k in weights):
        raise _refuse(path, "SAC with more than 2 critics (n_critics) is not supported")
    activation = _activation(path, kwargs, algorithm)
    ent = variables.get("log_ent_coef")
    if algorithm == "sac" and ent is None and isinstance(data.get("ent_coef"), int | float):
        ent = torch.tensor([math.log(float(data["ent_coef"]))])
    return SB3Policy(
        path=path, algorithm=algorithm, kind=kind, activation=activation,
        hidden=_hidden(weights, algorithm), action_space=_plain(data.get("action_space")),
        weights=weights, log_ent_coef=ent,
    )  # fmt: skip


def _shared_extractor(weights: dict) -> bool:
    """SB3 registers a shared extractor under ``features_extractor``, ``pi_features_extractor`` and
    ``vf_features_extractor`` alike; a separate value extractor holds other tensors."""
    value = {k.removeprefix("vf_"): v for k, v in weights.items() if k.startswith("vf_features_extractor.")}
    return all(torch.equal(v, weights.get(k, torch.empty(0))) for k, v in value.items())


def _algorithm(path: Path, data: dict) -> str:
    module = _plain(data.get("policy_class")).get("__module__", "")
    if module == "stable_baselines3.common.policies":
        return "ppo" if "clip_range" in data else "a2c"
    if module == "stable_baselines3.sac.policies":
        return "sac"
    found = module.split(".")[1] if module.startswith("stable_baselines3.") else module or "unknown"
    raise _refuse(path, f"algorithm {found!r} is not supported: lit_rl converts PPO, A2C and SAC policies")


def _kind(path: Path, weights: dict, prefix: str) -> str:
    extractor = [k for k in weights if re.match(rf"{re.escape(prefix)}(pi_|vf_)?features_extractor\.", k)]
    if not extractor:
        return "mlp"
    if all(".extractors." in k for k in extractor):
        return "multi"
    if all(re.search(r"features_extractor\.(cnn|linear)\.", k) for k in extractor):
        return "cnn"
    raise _refuse(
        path, "its policy class has a custom features extractor: lit_rl converts MlpPolicy, CnnPolicy "
        "and MultiInputPolicy (or load your network as a state dict with scenario.encoder)",
    )  # fmt: skip


def _activation(path: Path, kwargs: dict, algorithm: str) -> str:
    text = kwargs.get("activation_fn")
    if text is None:
        return DEFAULT_ACTIVATION[algorithm]
    name = re.search(r"\.(\w+)'>$", str(text))
    if name is None or name.group(1) not in ACTIVATION_NAMES:
        raise _refuse(path, f"activation_fn {text} is not supported: use one of {sorted(ACTIVATION_NAMES)}")
    return ACTIVATION_NAMES[name.group(1)]


def _hidden(weights: dict, algorithm: str) -> list[int]:
    prefix = "actor.latent_pi." if algorithm == "sac" else "mlp_extractor.policy_net."
    layers = sorted(
        (int(k[len(prefix) :].split(".")[0]), v.shape[0])
        for k, v in weights.items()
        if k.startswith(prefix) and k.endswith(".weight")
    )
    return [width for _, width in layers]


# --- renaming into lit_rl's networks (lit_rl.models.gym_networks) -------------------------------
def _extractor(rest: str, kind: str) -> str:
    """SB3's features-extractor key (after ``features_extractor.``) → the ``Encoder``'s."""
    if kind == "multi":  # extractors.<key>.cnn.N / extractors.<key>.linear.0 → extractors.<key>.cnn.…
        return re.sub(r"^(extractors\.[^.]+)\.(cnn|linear)\.", r"\1.cnn.\2.", rest)
    return f"reader.cnn.{rest}"  # cnn.N / linear.0 → reader.cnn.cnn.N / reader.cnn.linear.0


def ppo_weights(policy: SB3Policy) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(actor net, critic net) state dicts of ``PolicyNet`` / ``ValueNet`` from PPO/A2C weights."""
    actor, critic = {}, {}
    for key, value in policy.weights.items():
        if key.startswith("features_extractor."):  # pi_/vf_features_extractor: the same tensors
            name = "features_extractor." + _extractor(key.split("features_extractor.", 1)[1], policy.kind)
            actor[name] = critic[name] = value
        elif key.startswith("mlp_extractor.policy_net."):
            actor["policy_net." + key.removeprefix("mlp_extractor.policy_net.")] = value
        elif key.startswith("mlp_extractor.value_net."):
            critic["value_mlp." + key.removeprefix("mlp_extractor.value_net.")] = value
        elif key.startswith(("action_net.", "log_std")):
            actor[key] = value
        elif key.startswith("value_net."):
            critic[key] = value
    return actor, critic


def sac_weights(policy: SB3Policy) -> dict[str, dict[str, torch.Tensor]]:
    """``actor`` (``SquashedGaussianNet``), ``qf0``/``qf1`` and ``target0``/``target1`` (``QNet``)
    state dicts from SAC weights."""
    nets: dict[str, dict[str, torch.Tensor]] = {n: {} for n in ("actor", "qf0", "qf1", "target0", "target1")}
    for key, value in policy.weights.items():
        owner, _, rest = key.partition(".")
        if owner == "actor":
            if rest.startswith("features_extractor."):
                rest = "features_extractor." + _extractor(
                    rest.removeprefix("features_extractor."), policy.kind
                )
            nets["actor"][rest] = value
            continue
        target = "target" if owner == "critic_target" else "qf"
        if rest.startswith("features_extractor."):
            name = "features_extractor." + _extractor(rest.removeprefix("features_extractor."), policy.kind)
            nets[f"{target}0"][name] = nets[f"{target}1"][name] = value
        elif re.match(r"qf[01]\.", rest):
            nets[f"{target}{rest[2]}"]["qf." + rest[4:]] = value
    return nets
