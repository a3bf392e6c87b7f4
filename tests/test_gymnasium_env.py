"""The Gymnasium scenario: each start rule starts episodes where it says, the default networks read
vectors, discrete values, images and dicts, visitation comes from an info key (or is unknown, said
once), and bad settings fail in one line that names the setting and the fix."""

from __future__ import annotations

import logging

import gymnasium
import pytest
import torch

from lit_rl.cli import main
from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.scenarios import Gymnasium
from tests.conftest import ROOT

APPLE = "lit_rl/AppleRetrieval-v0"
PHASES = {"close": {"reset": None}, "far": {"env_kwargs": {"start": "far"}}}


def first_observations(scenario: Gymnasium, subspace: str, n: int = 8) -> torch.Tensor:
    env = scenario.make_env(n, subspace, seed=3)
    observation = env.reset()["observation"]
    env.close()
    return observation


def test_env_kwargs_start_far_episodes_in_the_later_phase():
    scenario = Gymnasium(APPLE, subspaces=PHASES, max_episode_steps=100)
    assert torch.all(first_observations(scenario, "close") < 0)  # phase 1 observes −c
    assert torch.all(first_observations(scenario, "far") > 0)  # phase 2 observes +c


def test_reset_options_start_every_episode_in_their_range():
    """CartPole's reset options ``low``/``high``; the collector's auto-resets use them too."""
    subspaces = {"close": {"reset": None}, "far": {"reset": {"low": 0.15, "high": 0.2}}}
    scenario = Gymnasium("CartPole-v1", subspaces=subspaces)
    assert torch.all(
        (first_observations(scenario, "far") >= 0.15) & (first_observations(scenario, "far") <= 0.2)
    )
    assert torch.all(first_observations(scenario, "close").abs() <= 0.05)
    env = scenario.make_env(4, "far", seed=0)
    td = env.rollout(60, break_when_any_done=False)  # CartPole falls within 60 random steps
    restarted = td["next", "done"][:, :-1].squeeze(-1)
    assert restarted.any()
    after = td["observation"][:, 1:][restarted]
    assert torch.all((after >= 0.15) & (after <= 0.2))


def test_a_sampler_class_path_starts_taxi_with_the_passenger_aboard():
    subspaces = {
        "close": {"reset": None},
        "far": {"sampler": {"class_path": "tests.gym_custom.PassengerAboard"}},
    }
    scenario = Gymnasium("Taxi-v3", subspaces=subspaces)
    taxi = gymnasium.make("Taxi-v3").unwrapped
    far = [list(taxi.decode(int(s)))[2] for s in first_observations(scenario, "far", 16)]
    close = [list(taxi.decode(int(s)))[2] for s in first_observations(scenario, "close", 16)]
    assert far == [4] * 16 and 4 not in close  # passenger index 4: in the taxi


def test_visitation_reads_the_named_info_key():
    scenario = Gymnasium(APPLE, subspaces=PHASES, max_episode_steps=100, visit_key="phase",
                         visit_names={1: "close", 2: "far"})  # fmt: skip
    env = scenario.make_env(4, "far", seed=0)
    shares = scenario.visitation(env.rollout(5, break_when_any_done=False))
    assert shares["far"] == 1.0 and shares["close"] == 0.0 and shares["other"] == 0.0


def test_unknown_visitation_is_said_once(caplog):
    scenario = Gymnasium("CartPole-v1", subspaces={"close": {"reset": None}, "far": {"reset": None}})
    batch = scenario.make_env(2, "close", seed=0).rollout(3)
    with caplog.at_level(logging.WARNING):
        assert scenario.visitation(batch) == {} and scenario.visitation(batch) == {}
    said = [r.message for r in caplog.records if "visitation" in r.message]
    assert len(said) == 1 and "visit_key" in said[0]


@pytest.mark.parametrize(
    ("env_id", "continuous"), [("FrozenLake-v1", False), ("MountainCarContinuous-v0", True)]
)
def test_default_networks_act_and_evaluate(env_id, continuous):
    subspaces = {"close": {"reset": None}, "far": {"reset": None}}
    scenario = Gymnasium(env_id, subspaces=subspaces, max_episode_steps=50)
    policy = scenario.make_policy().modules()
    metrics = SubspaceEvaluator(episodes=2, seed=0).evaluate_all(scenario, policy["actor"])
    assert set(metrics) == {"close", "far"} and metrics["far"]["episodes"] == 2
    assert scenario.continuous == continuous


# --- bad input: one line naming the setting and the fix -------------------------------------------
@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"env_id": "NoSuchEnv-v0"}, ["scenario.env_id", "NoSuchEnv-v0", "pprint_registry"]),
        ({"subspaces": {"close": {"reset": None}, "far": {}}}, ["scenario.subspaces.far", "no start rule"]),
        (
            {"subspaces": {"close": {"reset": None}, "far": {"start": "far"}}},
            ["subspaces.far", "exactly one"],
        ),
        ({"subspaces": {"close": {"reset": None}}}, ["scenario.subspaces has no 'far'"]),
        ({"env_id": "Blackjack-v1"}, ["observation space", "scenario.encoder"]),
        ({"activation": "swish"}, ["scenario.activation", "tanh"]),
        ({"env_id": "CartPole-v1", "algorithm": "sac"}, ["algorithm = sac", "continuous"]),
    ],
)
def test_bad_settings_fail_in_one_line(settings, words):
    args = {
        "env_id": "CartPole-v1",
        "subspaces": {"close": {"reset": None}, "far": {"reset": None}},
        **settings,
    }
    with pytest.raises(ValueError) as error:
        Gymnasium(**args).make_policy()
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_the_cli_reports_an_unknown_env_id_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([
            "fit", "--config", str(ROOT / "configs/base.yaml"),
            "--config", str(ROOT / "configs/env/applegym.yaml"),
            "--model.scenario.init_args.env_id", "NoSuchEnv-v0", "--run_dir", str(tmp_path / "run"),
        ])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "scenario.env_id" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("entry", "kwargs", "keys"),
    [
        ("stable_baselines3.common.envs:SimpleMultiObsEnv", {}, ("vec", "img")),  # a dict: vector + image
        (
            "stable_baselines3.common.envs:FakeImageEnv",
            {"screen_height": 36, "screen_width": 36},
            ("observation",),
        ),
    ],
)
def test_dicts_and_images_are_collected_and_read(entry, kwargs, keys, one_torch_thread):
    pytest.importorskip("stable_baselines3")
    env_id = f"lit_rl_test/{entry.rsplit(':', 1)[1]}-collect-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point=entry, kwargs=kwargs, max_episode_steps=20)
    scenario = Gymnasium(env_id, subspaces={"close": {"reset": None}, "far": {"reset": None}})
    policy = scenario.make_policy().modules()
    batch = scenario.make_env(2, "close", seed=0).rollout(5, policy["actor"], break_when_any_done=False)
    assert all(batch[key].shape[:2] == (2, 5) for key in keys)
    assert batch[keys[-1]].dtype == torch.uint8  # images stay raw; the encoder scales them
    assert policy["critic"](batch)["state_value"].shape == (2, 5, 1)
