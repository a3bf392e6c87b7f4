"""Tuyls et al.'s released behavioural-cloning checkpoint (``model_115.tar``) as a ScaledNet export.

The paper's π* (section 3) is that checkpoint: the original ``NetHackNetTtyrec`` with 32,931,352
parameters, the count ``ScaledNet("paper")`` has. The file is a ``torch.save``d dict holding the
weights under ``"model_state_dict"`` as bare keys of that class (newer saves add ``"flags"`` and
optimiser state, which are ignored). ``source_names`` places every one of its 128 entries:

- ``reward_sum``, ``reward_m2``, ``reward_count``, ``crop.width_grid``, ``crop.height_grid``:
  buffers with no learned content (a reward normaliser the policy never reads, and the crop's
  sampling grid, which ScaledNet computes from offsets); dropped.
- every other key is one ScaledNet tensor of the same shape (the table in ``source_names``); the
  embeddings, kept inside the original's screen encoder and shared with its crop, become
  ScaledNet's ``char_embedding`` / ``color_embedding``, which its map and crop share too.

Anything else (a key it cannot place, a key it expects and does not find, a shape that differs)
stops the conversion with one line naming the keys. ScaledNet computes the original's function on
these weights (see ``lit_rl.models.scaled_net``), so the converted policy gives the same logits.

What was and was not checked: the names, shapes and dtypes come from the public source built with
the released flags (``tests/data/model115_state_dict.tsv``), and the tests convert a checkpoint
written with exactly those entries. The released file itself could not be downloaded where this
was written, so it has not been converted here; in particular it is not known whether its
``"flags"`` are plain containers (``torch.load(weights_only=True)`` reads them) or pickled objects
(then ``--allow-pickle`` is needed, and the error says so).

    python -m lit_rl.models.model115 model_115.tar --out pretrained/nethack_paper.pt --size paper

The output is a lit_rl policy export for the NetHack scenario at that size, loaded by fine-tuning
through ``model.pretrained`` (``configs/env/nethack_paper.yaml``). ``--size small`` / ``tiny``
convert checkpoints of the same layout at those widths (used by the tests).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch
from torch import nn

from lit_rl.models.nethack_policy import make_actor_critic
from lit_rl.models.policy_io import save_policy
from lit_rl.models.scaled_net import SIZES, ScaledNet, describe_scaled_net

#: the scenario whose policy exports this converter writes (``lit_rl.scenarios.NetHack.name``)
NETHACK_SCENARIO = "nethack"

#: entries of the original state dict with no learned content
DROPPED = ("reward_sum", "reward_m2", "reward_count", "crop.width_grid", "crop.height_grid")
CONTAINER_KEY = "model_state_dict"

_LINEAR = ("weight", "bias")
_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LSTM = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


class CheckpointMismatch(ValueError):
    """The checkpoint is not the original network at the requested size; the message is one line."""


def source_names(net: ScaledNet) -> dict[str, str]:
    """Every learned tensor of the original network at ``net``'s widths: source key -> ScaledNet key.

    Source side, as the original names its modules: the message MLP ``topline_encoder.msg_fwd.{0,2}``;
    the status CNN ``bottomline_encoder.conv_net.{0,2}`` then ``fwd_net.{0,2}``; the map encoder
    ``screen_encoder.conv_net.{b}`` (``.0`` the block's first conv, ``.1`` its max-pool,
    ``.{2,3}.net.{0,1,3,4}`` the residual blocks' conv, BatchNorm, conv, BatchNorm) and
    ``screen_encoder.fc_head.0``; the crop CNN ``extract_crop_representation.{3i, 3i+1}`` (conv,
    BatchNorm, then an ELU at 3i+2); ``fc.{0,2}``; the LSTM ``core``; ``policy`` and ``baseline``.
    """
    names: dict[str, str] = {}

    def place(source: str, target: str, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            names[f"{source}.{kind}"] = f"{target}.{kind}"

    place("topline_encoder.msg_fwd.0", "top_line.one_hot_linear", _LINEAR)
    place("topline_encoder.msg_fwd.2", "top_line.out.1", _LINEAR)
    bottom = _indices(net.bottom_lines.net, (nn.Conv1d, nn.Linear))
    place("bottomline_encoder.conv_net.0", f"bottom_lines.net.{bottom[0]}", _LINEAR)
    place("bottomline_encoder.conv_net.2", f"bottom_lines.net.{bottom[1]}", _LINEAR)
    place("bottomline_encoder.fwd_net.0", f"bottom_lines.net.{bottom[2]}", _LINEAR)
    place("bottomline_encoder.fwd_net.2", f"bottom_lines.net.{bottom[3]}", _LINEAR)

    place("screen_encoder.char_embeddings", "char_embedding", ("weight",))
    place("screen_encoder.color_embeddings", "color_embedding", ("weight",))
    for b in range(len(net.config.map_channels)):
        source, target = f"screen_encoder.conv_net.{b}", f"map_encoder.{b}"
        place(f"{source}.0", f"{target}.0", _LINEAR)
        for residual in (2, 3):
            for layer in (0, 1):
                inner = f"{target}.{residual}.body.{layer}"
                place(f"{source}.{residual}.net.{3 * layer}", f"{inner}.0", _LINEAR)
                place(f"{source}.{residual}.net.{3 * layer + 1}", f"{inner}.1", _NORM)
    (head,) = _indices(net.map_encoder, (nn.Linear,))
    place("screen_encoder.fc_head.0", f"map_encoder.{head}", _LINEAR)

    for i in range(len(net.config.crop_channels)):
        place(f"extract_crop_representation.{3 * i}", f"crop_encoder.{i}.0", _LINEAR)
        place(f"extract_crop_representation.{3 * i + 1}", f"crop_encoder.{i}.1", _NORM)

    place("fc.0", "fc.0", _LINEAR)
    place("fc.2", "fc.2", _LINEAR)
    for kind in _LSTM:
        names[f"core.{kind}"] = f"lstm.{kind}"
    place("policy", "policy", _LINEAR)
    place("baseline", "value", _LINEAR)

    unplaced = set(net.state_dict()) - set(names.values())
    if unplaced or len(set(names.values())) != len(names):  # ScaledNet's layout moved: fix the table
        raise AssertionError(f"source_names does not cover ScaledNet: {sorted(unplaced)}")
    return names


def _indices(sequential: nn.Sequential, kinds: tuple[type, ...]) -> list[int]:
    return [i for i, module in enumerate(sequential) if isinstance(module, kinds)]


def to_source_layout(net: ScaledNet) -> dict[str, torch.Tensor]:
    """``net``'s weights named as in the original, with its buffers (tests write checkpoints of
    other sizes from this; the paper size is tested against the reference key list)."""
    target = net.state_dict()
    grid = net.config.crop_size
    out = {k: torch.zeros(()) for k in DROPPED[:3]}
    out.update({k: torch.zeros(grid, grid) for k in DROPPED[3:]})
    out.update({source: target[name].clone() for source, name in source_names(net).items()})
    return out


def _short(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert(source: dict[str, torch.Tensor], net: ScaledNet) -> ScaledNet:
    """Load the original's state dict into ``net``; unplaced, missing or misshaped keys fail."""
    names = source_names(net)
    target = net.state_dict()
    unplaced = [k for k in source if k not in names and k not in DROPPED]
    missing = [k for k in names if k not in source]
    shapes = [
        f"{k} {tuple(source[k].shape)} (ScaledNet {names[k]} {tuple(target[names[k]].shape)})"
        for k in names
        if k in source and source[k].shape != target[names[k]].shape
    ]
    problems = []
    if unplaced:
        problems.append(f"{len(unplaced)} keys it cannot place: {_short(unplaced)}")
    if missing:
        problems.append(f"{len(missing)} keys missing: {_short(missing)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_short(shapes, 2)}")
    if problems:
        raise CheckpointMismatch("; ".join(problems))
    net.load_state_dict({names[k]: v for k, v in source.items() if k in names})
    return net


def source_state_dict(payload) -> dict[str, torch.Tensor]:
    """The original's state dict inside a loaded checkpoint (a DDP ``module.`` prefix stripped)."""
    if isinstance(payload, dict) and isinstance(payload.get(CONTAINER_KEY), dict):
        payload = payload[CONTAINER_KEY]
    if not isinstance(payload, dict) or not payload or not all(torch.is_tensor(v) for v in payload.values()):
        keys = list(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointMismatch(f"holds no state dict under {CONTAINER_KEY!r} (found {keys})")
    if all(k.startswith("module.") for k in payload):
        payload = {k.removeprefix("module."): v for k, v in payload.items()}
    return payload


def load_checkpoint(path: str | Path, allow_pickle: bool = False):
    """``torch.load`` of ``path``, tensors and plain containers only unless ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (Tuyls et al.'s model_115.tar)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as error:
        if allow_pickle:
            raise CheckpointMismatch(f"{path} is not a readable torch checkpoint ({error})") from None
        first = str(error).strip().splitlines()[0]
        raise CheckpointMismatch(
            f"{path} holds Python objects beyond tensors ({first}); "
            "if you trust the file, re-run with --allow-pickle (unpickling runs code from it)"
        ) from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is one user-facing line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointMismatch(f"{path} is not a readable torch checkpoint ({first})") from None


def convert_checkpoint(path: str | Path, size: str = "paper", allow_pickle: bool = False) -> ScaledNet:
    """A ScaledNet of ``size`` holding the weights of the original-layout checkpoint ``path``."""
    payload = load_checkpoint(path, allow_pickle)
    try:
        return convert(source_state_dict(payload), ScaledNet(size))
    except CheckpointMismatch as error:
        raise CheckpointMismatch(f"{path} is not model_115's layout at size {size}: {error}") from None


def export(path: str | Path, out: str | Path, size: str = "paper", allow_pickle: bool = False) -> None:
    """Convert and write a lit_rl policy export for the NetHack scenario of that size: the state
    dict of its actor and critic (which share the ScaledNet) and the scenario's description."""
    net = convert_checkpoint(path, size, allow_pickle)
    actor, critic = make_actor_critic(net)
    description = {"scenario": NETHACK_SCENARIO, **describe_scaled_net(size)}
    save_policy(out, nn.ModuleDict({"actor": actor, "critic": critic}), description)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lit_rl.models.model115", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="model_115.tar (Tuyls et al. 2023)")
    parser.add_argument("--out", default="pretrained/nethack_paper.pt", help="lit_rl policy export")
    parser.add_argument("--size", default="paper", choices=sorted(SIZES))
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="unpickle Python objects beyond tensors (only for a file you trust)",
    )
    args = parser.parse_args(argv)
    try:
        export(args.checkpoint, args.out, args.size, args.allow_pickle)
    except (ValueError, FileNotFoundError) as error:
        print(f"model115: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out} (ScaledNet {args.size}, NetHack scenario policy export)")


if __name__ == "__main__":
    main()
