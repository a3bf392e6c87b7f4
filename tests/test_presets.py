"""Presets are overlays with the paper's values, and a run's identity comes from its configuration.

Each test resolves configs through the real CLI (``--print_config``), as ``make finetune`` overlays
them: base → env (→ its paper overlay) → method(s)."""

import pytest
import yaml

from lit_rl.cli import main
from lit_rl.training.run_identity import default_run_name, methods_label
from tests.conftest import ROOT


def resolve(capsys, *configs: str) -> dict:
    args = ["fit", "--config", str(ROOT / "configs/base.yaml")]
    for config in configs:
        args += ["--config", str(ROOT / "configs" / config)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def retention(config: dict) -> list[dict]:
    return config["model"]["init_args"]["retention"]


@pytest.mark.parametrize("env", sorted(p.stem for p in (ROOT / "configs/env").glob("*.yaml")))
def test_each_env_preset_names_itself(env):
    """``preset`` in configs/env/<name>.yaml is <name>: the run folder and the report use it."""
    assert yaml.safe_load((ROOT / f"configs/env/{env}.yaml").read_text())["preset"] == env


def test_paper_presets_overlay_their_cpu_preset(capsys):
    """nethack_paper holds only what differs: the rest (APPO settings) comes from nethack.yaml."""
    paper = resolve(capsys, "env/nethack.yaml", "env/nethack_paper.yaml")
    model = paper["model"]["init_args"]
    assert paper["preset"] == "nethack_paper"
    assert model["scenario"]["init_args"]["size"] == "paper"
    assert model["scenario"]["init_args"]["far_dlvl"] == 4
    assert (
        model["optimisation"]["lr"],
        model["loss"]["clip_epsilon"],
        model["loss"]["value_clip"],
        model["optimisation"]["max_grad_norm"],
    ) == (1e-4, 0.1, 1.0, 4.0)
    assert model["optimisation"]["weight_decay"] == 1e-4 and model["budget"]["learning_starts"] == 25_000_000
    assert model["optimisation"]["minibatch_size"] == 4096 and model["collection"]["rollout_length"] == 32
    callbacks = [c["class_path"] for c in paper["trainer"]["callbacks"]]
    assert callbacks.count("callbacks.SubspaceEvaluation") == 1
    montezuma = resolve(capsys, "env/montezuma.yaml", "env/montezuma_paper.yaml")["model"]["init_args"]
    collection, optimisation = montezuma["collection"], montezuma["optimisation"]
    assert (collection["num_envs"], collection["rollout_length"], optimisation["epochs"]) == (128, 128, 4)
    assert montezuma["scenario"]["init_args"]["max_episode_steps"] == 4500


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ks", {"coef": 0.75, "decay": 0.99998, "coef_min": 0.33}),
        ("ks_text", {"coef": 0.5, "decay": 0.99998, "coef_min": 0.0}),
        ("bc", {"coef": 2.0, "batch_size": 4096, "seq_length": 32}),
        ("ewc", {"coef": 2e6, "fisher": "batch_mean", "fisher_states": 10_000 * 4096, "fisher_batch": 4096}),
        ("ewc_code", {"coef": 2e7, "fisher": "batch_mean", "fisher_states": 30_000 * 4096}),
    ],
)
def test_nethack_paper_method_values(capsys, method, expected):
    """The paper's NetHack settings (paper.md §2): code and text values both where they differ."""
    config = resolve(
        capsys, "env/nethack.yaml", "env/nethack_paper.yaml", f"method/nethack_paper/{method}.yaml"
    )
    (only,) = retention(config)
    assert {k: only["init_args"][k] for k in expected} == expected


def test_methods_append_so_they_combine(capsys):
    config = resolve(capsys, "env/apple.yaml", "method/bc.yaml", "method/ks.yaml")
    assert [m["class_path"].rsplit(".", 1)[1] for m in retention(config)] == [
        "BehaviouralCloningReplay",
        "Kickstarting",
    ]


def test_run_names_come_from_preset_methods_and_seed():
    ks, bc = "lit_rl.retention.Kickstarting", "lit_rl.retention.BehaviouralCloningReplay"
    assert default_run_name("nethack", [ks, bc], 3, pretrained=True, teacher=False) == "nethack-bc+ks-s3"
    assert default_run_name("nethack", [bc, ks], 3, pretrained=True, teacher=False) == "nethack-bc+ks-s3"
    assert default_run_name("nethack_paper", [ks], 0, True, False) != default_run_name(
        "nethack", [ks], 0, True, False
    )
    assert methods_label([], pretrained=True) == "none"
    assert methods_label([], pretrained=False) == "pretrain"
    assert methods_label(["ks"], pretrained=False, teacher=True) == "ks+scratch"


def test_a_preset_overrides_only_the_keys_of_a_section_it_names(capsys):
    """Settings are grouped by concern; an overlay that sets some keys of a section keeps the rest
    from the files below it (jsonargparse merges dataclass groups key by key)."""
    model = resolve(capsys, "env/nethack.yaml", "env/nethack_study.yaml")["model"]["init_args"]
    assert model["collection"]["mode"] == "async" and model["collection"]["num_envs"] == 32  # study
    assert model["collection"]["start"] == "close"  # base.yaml
    assert model["optimisation"]["lr"] == 0.0005 and model["optimisation"]["lr_decay"] is True  # both
    assert model["loss"]["value_clip"] == 1.0 and model["evaluation"]["episodes"] == 64
