"""Saving and loading exported policies (π*), atomically and with a model fingerprint.

An exported policy is the actor and critic weights plus the scenario's ``describe()`` dict; loading
a file written for another model fails with one line that names the mismatch and the fix. A policy
trained elsewhere (a Stable-Baselines3 ``.zip``, or a plain state dict of the actor's network) is
converted by ``lit_rl.models.foreign``. A policy file is read by :func:`lit_rl.safe_load.safe_load`:
a file handed in cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from lit_rl.models.foreign import is_state_dict, load_actor_state_dict, load_sb3
from lit_rl.safe_load import UntrustedFile, first_line, safe_load

FORMAT = "lit_rl.policy/1"


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_policy(path: str | os.PathLike, policy: nn.Module, description: dict) -> None:
    atomic_torch_save({"format": FORMAT, "model": description, "state_dict": policy.state_dict()}, path)


def load_policy(path: str | os.PathLike, policy: nn.Module, description: dict) -> None:
    """Load an exported policy into ``policy`` after checking it was written for the same model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pre-trained policy {path} not found: run `make pretrain` first")
    if path.suffix == ".zip":
        load_sb3(path, policy, description)
        return
    try:
        payload = safe_load(path)
    except UntrustedFile:
        raise
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable policy file ({first_line(error)}); re-run `make pretrain`"
        ) from None
    if is_state_dict(payload):
        load_actor_state_dict(path, payload, policy)
        return
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lit_rl policy export; re-run `make pretrain`")
    if payload["model"] != description:
        raise ValueError(
            f"{path} holds a policy for {payload['model']}, not {description}: "
            "pre-train this model (`make pretrain ENV=…`) or pick the matching checkpoint"
        )
    policy.load_state_dict(payload["state_dict"])
