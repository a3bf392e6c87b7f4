"""The model_115 converter on a checkpoint laid out as Tuyls et al.'s released file.

``tests/data/model115_state_dict.tsv`` lists every entry of that file's ``model_state_dict`` (name,
shape, dtype; 128 entries, read from the public source with the released flags). The tests write a
checkpoint with exactly those entries and random values, convert it through the command line, and
check where each tensor landed, that the export loads as the NetHack scenario's paper-size policy,
and that other layouts stop with one line naming the keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_rl.models.model115 import (
    DROPPED,
    CheckpointMismatch,
    convert_checkpoint,
    main,
    source_names,
    to_source_layout,
)
from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.models.scaled_net import NUM_ACTIONS, ScaledNet
from lit_rl.scenarios.nethack import NetHack

REFERENCE = Path(__file__).parent / "data" / "model115_state_dict.tsv"
#: model115.md: "flags" of the 1738-wide model, stored beside the weights in newer saves
FLAGS = {"h_dim": 1738, "msg_hdim": 64, "char_edim": 16, "color_edim": 16, "crop_dim": 9,
         "use_crop_norm": True, "screen_conv_blocks": 2, "num_res_blocks": 2, "num_res_layers": 2,
         "fc_after_cnn_hdim": 512, "use_prev_action": True, "num_lstm_layers": 1,
         "num_fc_layers": 2, "use_resnet": True, "no_max_pool": False}  # fmt: skip

#: source key -> ScaledNet key, written out by hand from model115.md's key groups (independent of
#: the converter's table): one entry per group, where a misplaced tensor would go unnoticed by shape
SPOT_CHECKS = {
    "screen_encoder.char_embeddings.weight": "char_embedding.weight",
    "screen_encoder.color_embeddings.weight": "color_embedding.weight",
    "topline_encoder.msg_fwd.0.weight": "top_line.one_hot_linear.weight",
    "topline_encoder.msg_fwd.2.weight": "top_line.out.1.weight",
    "bottomline_encoder.conv_net.2.bias": "bottom_lines.net.2.bias",
    "bottomline_encoder.fwd_net.2.weight": "bottom_lines.net.7.weight",
    "screen_encoder.conv_net.0.0.weight": "map_encoder.0.0.weight",
    "screen_encoder.conv_net.0.2.net.0.weight": "map_encoder.0.2.body.0.0.weight",
    "screen_encoder.conv_net.0.2.net.3.weight": "map_encoder.0.2.body.1.0.weight",
    "screen_encoder.conv_net.0.3.net.0.weight": "map_encoder.0.3.body.0.0.weight",
    "screen_encoder.conv_net.1.3.net.1.running_var": "map_encoder.1.3.body.0.1.running_var",
    "screen_encoder.conv_net.1.3.net.4.bias": "map_encoder.1.3.body.1.1.bias",
    "screen_encoder.fc_head.0.bias": "map_encoder.3.bias",
    "extract_crop_representation.3.weight": "crop_encoder.1.0.weight",
    "extract_crop_representation.4.running_mean": "crop_encoder.1.1.running_mean",
    "extract_crop_representation.9.weight": "crop_encoder.3.0.weight",
    "fc.2.weight": "fc.2.weight",
    "core.weight_hh_l0": "lstm.weight_hh_l0",
    "core.bias_ih_l0": "lstm.bias_ih_l0",
    "policy.bias": "policy.bias",
    "baseline.weight": "value.weight",
}


def reference_layout() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    rows = []
    for line in REFERENCE.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        rows.append((name, dims, getattr(torch, dtype.removeprefix("torch."))))
    return rows


def reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the reference names, shapes and dtypes (BatchNorm variances
    positive, step counts integers), in the file's order."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, dtype in reference_layout():
        if dtype == torch.int64:
            out[name] = torch.randint(1, 1000, shape, generator=g)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(shape, generator=g, dtype=dtype) * 0.05
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.set_num_threads(1)
    state = reference_state_dict()
    path = tmp_path_factory.mktemp("model115") / "model_115.tar"
    torch.save({"model_state_dict": state, "flags": FLAGS}, path)
    return path, state


def cli_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("model115: error: ") and "\n" not in err
    return err


def test_reference_file_lists_the_released_network():
    layout = reference_layout()
    assert len(layout) == 128
    names = [name for name, _, _ in layout]
    assert set(DROPPED) <= set(names)
    params = sum(torch.Size(shape).numel() for name, shape, _ in layout
                 if name not in DROPPED and "running_" not in name and "num_batches" not in name)  # fmt: skip
    assert params == 32_931_352


def test_converter_places_every_reference_key(reference, tmp_path, capsys):
    path, source = reference
    out = tmp_path / "nethack_paper.pt"
    main([str(path), "--out", str(out), "--size", "paper"])
    assert f"wrote {out}" in capsys.readouterr().out

    net = ScaledNet("paper")
    names = source_names(net)
    assert set(names) == set(source) - set(DROPPED)  # every reference key but the buffers
    converted = convert_checkpoint(path, size="paper").state_dict()
    for key, target in names.items():
        assert torch.equal(converted[target], source[key]), key
    for key, target in SPOT_CHECKS.items():
        assert names[key] == target and torch.equal(converted[target], source[key]), key


@torch.no_grad()
def test_export_loads_as_the_paper_nethack_policy(reference, tmp_path):
    """As fine-tuning loads π* (``model.pretrained``): the scenario's policy at size paper, checked
    against its description, then the same logits as the converted network."""
    path, _ = reference
    out = tmp_path / "nethack_paper.pt"
    main([str(path), "--out", str(out), "--size", "paper"])
    scenario = NetHack(size="paper")
    policy = scenario.make_policy().modules()
    load_policy(out, policy, scenario.describe())

    net = convert_checkpoint(path, size="paper").eval()
    loaded = next(m for m in policy.modules() if isinstance(m, ScaledNet)).eval()
    g = torch.Generator().manual_seed(3)
    obs = (
        torch.randint(32, 128, (2, 24, 80), generator=g, dtype=torch.uint8),
        torch.randint(0, 16, (2, 24, 80), generator=g, dtype=torch.uint8),
        torch.tensor([[0, 3], [12, 40]], dtype=torch.uint8),
        torch.tensor([0, 17]),
    )
    expected, value, _ = net(*obs)
    logits, loaded_value, _ = loaded(*obs)
    assert expected.shape == (2, NUM_ACTIONS)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(loaded_value, value, rtol=0, atol=0)


def test_old_guessed_layout_fails_in_one_line_naming_keys(tmp_path, capsys):
    """The layout the previous converter assumed (top-level embeddings, ``crop_encoder``,
    ``policy_head``) is not the released file's."""
    state = reference_state_dict()
    state["char_embeddings.weight"] = state.pop("screen_encoder.char_embeddings.weight")
    state["policy_head.bias"] = state.pop("policy.bias")
    path = tmp_path / "guessed.tar"
    torch.save({"model_state_dict": state}, path)
    err = cli_error(capsys, str(path), "--out", str(tmp_path / "out.pt"))
    assert "2 keys it cannot place: char_embeddings.weight, policy_head.bias" in err
    assert "2 keys missing: " in err and "screen_encoder.char_embeddings.weight" in err
    assert "policy.bias" in err and not (tmp_path / "out.pt").exists()


def test_shape_that_differs_is_named(tmp_path, capsys):
    state = reference_state_dict()
    state["fc.0.weight"] = torch.zeros(1738, 1472)
    path = tmp_path / "narrow.tar"
    torch.save({"model_state_dict": state, "flags": FLAGS}, path)
    err = cli_error(capsys, str(path), "--out", str(tmp_path / "out.pt"))
    assert "1 shapes differ: fc.0.weight (1738, 1472) (ScaledNet fc.0.weight (1738, 1473))" in err


def test_another_model_or_size_fails_in_one_line(reference, tmp_path, capsys):
    path = tmp_path / "linear.tar"
    torch.save({"model_state_dict": torch.nn.Linear(4, 2).state_dict()}, path)
    err = cli_error(capsys, str(path), "--size", "tiny", "--out", str(tmp_path / "out.pt"))
    assert "2 keys it cannot place: weight, bias" in err and "keys missing" in err
    err = cli_error(capsys, str(reference[0]), "--size", "tiny", "--out", str(tmp_path / "out.pt"))
    assert "shapes differ" in err and "at size tiny" in err
    with pytest.raises(CheckpointMismatch, match="model_115's layout at size small: .* shapes differ"):
        convert_checkpoint(reference[0], size="small")
    torch.save({"optimizer": {"lr": 1e-4}}, path)
    assert "holds no state dict under 'model_state_dict'" in cli_error(capsys, str(path))
    assert "not found" in cli_error(capsys, str(tmp_path / "missing.tar"))


@torch.no_grad()
@pytest.mark.parametrize("size", ["tiny", "small"])
def test_smaller_sizes_round_trip(size, tmp_path):
    torch.manual_seed(1)
    source = ScaledNet(size).eval()
    path = tmp_path / "model.tar"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in to_source_layout(source).items()}}, path)
    converted = convert_checkpoint(path, size=size).eval()
    obs = (
        torch.randint(32, 128, (3, 24, 80), dtype=torch.uint8),
        torch.randint(0, 16, (3, 24, 80), dtype=torch.uint8),
        torch.tensor([[0, 0], [5, 10], [21, 79]], dtype=torch.uint8),
        torch.tensor([0, 7, 120]),
    )
    torch.testing.assert_close(converted(*obs)[0], source(*obs)[0], rtol=0, atol=0)


def test_export_of_an_older_computation_fails_in_one_line(tmp_path):
    """Policies exported before ScaledNet computed the released network's function carry no
    computation version: loading one names both descriptions instead of acting differently."""
    scenario = NetHack(size="tiny")
    policy = scenario.make_policy().modules()
    old = {key: value for key, value in scenario.describe().items() if key != "computation"}
    save_policy(tmp_path / "old.pt", policy, old)
    with pytest.raises(ValueError) as error:
        load_policy(tmp_path / "old.pt", scenario.make_policy().modules(), scenario.describe())
    assert "\n" not in str(error.value) and "'computation': 2" in str(error.value)
