"""Convert Tuyls et al.'s released behavioural-cloning checkpoint (``model_115.tar``) into ScaledNet.

The paper's π* (section 3) is that checkpoint: 32,931,352 parameters, the count ``ScaledNet("paper")``
reproduces. No download is possible where this was written, so the source layout below is an
ASSUMPTION, not checked against the real file: the checkpoint is a ``torch.save``d dict whose weights
sit under ``model_state_dict`` (also accepted: ``model``, ``state_dict``, ``learner_state.model``,
or the bare state dict), optionally behind a ``module.`` / ``model.`` prefix, named as in
``SOURCE_PREFIXES`` (left: source name, right: ScaledNet name). If the real file differs, the
converter stops with one line naming the keys it could not place; extend ``SOURCE_PREFIXES``.

    python -m lit_rl.nethack_convert model_115.tar --out pretrained/nethack_paper.pt --size paper

The output is a lit_rl policy export for the NetHack scenario at that size (``make finetune
ENV=nethack`` with ``model.pretrained`` pointing at it and ``size: paper``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lit_rl.models.scaled_net import ScaledNet

#: assumed source-name prefix -> ScaledNet prefix (longest match wins)
SOURCE_PREFIXES = {
    "char_embeddings.": "char_embedding.",
    "color_embeddings.": "color_embedding.",
    "topline_encoder.msg_fwd.0.": "top_line.one_hot_linear.",
    "topline_encoder.msg_fwd.2.": "top_line.out.1.",
    "bottomline_encoder.conv_net.0.": "bottom_lines.net.0.",
    "bottomline_encoder.conv_net.2.": "bottom_lines.net.2.",
    "bottomline_encoder.fwd_net.0.": "bottom_lines.net.5.",
    "bottomline_encoder.fwd_net.2.": "bottom_lines.net.7.",
    "screen_encoder.": "map_encoder.",
    "crop_encoder.": "crop_encoder.",
    "fc.": "fc.",
    "core.": "lstm.",
    "policy_head.": "policy.",
    "baseline.": "value.",
}
CONTAINER_KEYS = ("model_state_dict", "model", "state_dict")
WRAPPER_PREFIXES = ("module.", "model.")


class CheckpointMismatch(ValueError):
    """The checkpoint is not (this layout of) the expected ScaledNet."""


def source_state_dict(payload) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint, with wrapper prefixes stripped."""
    if isinstance(payload, dict) and isinstance(payload.get("learner_state"), dict):
        payload = payload["learner_state"].get("model", payload)
    for key in CONTAINER_KEYS:
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not any(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointMismatch("holds no state dict (looked under " + ", ".join(CONTAINER_KEYS) + ")")
    tensors = {k: v for k, v in payload.items() if torch.is_tensor(v)}
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def rename(key: str) -> str | None:
    """The ScaledNet name of a source key, or None when no prefix rule places it."""
    matches = [p for p in SOURCE_PREFIXES if key.startswith(p)]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return SOURCE_PREFIXES[prefix] + key[len(prefix) :]


def to_source_layout(net: ScaledNet) -> dict[str, torch.Tensor]:
    """ScaledNet weights written in the assumed source layout (the inverse map; used by tests)."""
    inverse = sorted(((t, s) for s, t in SOURCE_PREFIXES.items()), key=lambda p: -len(p[0]))
    out = {}
    for key, value in net.state_dict().items():
        target, source = next((t, s) for t, s in inverse if key.startswith(t))
        out[source + key[len(target) :]] = value.clone()
    return out


def _short(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert(source: dict[str, torch.Tensor], net: ScaledNet) -> ScaledNet:
    """Load source-layout weights into ``net``; any unplaced, missing or misshaped key fails."""
    target = net.state_dict()
    renamed, unplaced = {}, []
    for key, value in source.items():
        name = rename(key)
        if name is None or name not in target:
            unplaced.append(key)
        else:
            renamed[name] = value
    missing = [k for k in target if k not in renamed]
    shapes = [
        f"{k} {tuple(renamed[k].shape)}≠{tuple(target[k].shape)}"
        for k in renamed
        if renamed[k].shape != target[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_short(missing)}")
    if unplaced:
        problems.append(f"{len(unplaced)} unexpected keys: {_short(unplaced)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_short(shapes, 2)}")
    if problems:
        raise CheckpointMismatch("; ".join(problems))
    net.load_state_dict(renamed)
    return net


def convert_checkpoint(path: str | Path, size: str = "paper") -> ScaledNet:
    """A ScaledNet of ``size`` holding the weights of checkpoint ``path``; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (Tuyls et al.'s model_115.tar)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise CheckpointMismatch(f"{path} is not a readable torch checkpoint ({error})") from None
    try:
        return convert(source_state_dict(payload), ScaledNet(size))
    except CheckpointMismatch as error:
        raise CheckpointMismatch(
            f"{path} is not a ScaledNet({size}) checkpoint in the assumed model_115 layout: {error}"
        ) from None


def export(path: str | Path, out: str | Path, size: str = "paper") -> None:
    """Convert and write a lit_rl policy export for the NetHack scenario of that size."""
    from lit_rl.scenarios.nethack import NetHack
    from lit_rl.training.policy_io import save_policy

    net = convert_checkpoint(path, size)
    scenario = NetHack(size=size)
    policy = scenario.make_policy().modules()
    policy["actor"].module[0].net.load_state_dict(net.state_dict())
    save_policy(out, policy, scenario.describe())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="model_115.tar")
    parser.add_argument("--out", default="pretrained/nethack_paper.pt")
    parser.add_argument("--size", default="paper", choices=["paper", "small", "tiny"])
    args = parser.parse_args(argv)
    try:
        export(args.checkpoint, args.out, args.size)
    except (ValueError, FileNotFoundError) as error:
        print(f"nethack-convert: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
