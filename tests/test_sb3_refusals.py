"""Policy files from elsewhere: nothing in them runs, and what lit_rl cannot convert is refused in
one line naming the setting and the fix.

The crafted zip carries two live payloads that write a file when unpickled: one in ``policy.pth``
(refused by ``torch.load(weights_only=True)``) and one in a ``data`` field's ``:serialized:``
cloudpickle (never decoded). The test first shows the payload is live: what its unpickling would
call writes the file.
"""

from __future__ import annotations

import base64
import builtins
import io
import json
import pickle
import zipfile

import gymnasium
import pytest
import torch
from tensordict import TensorDict

from lit_rl.cli import main
from lit_rl.models.policy_io import load_policy
from lit_rl.scenarios import Gymnasium
from tests.conftest import ROOT

sb3 = pytest.importorskip("stable_baselines3")

BOTH = {"close": {"reset": None}, "far": {"reset": None}}


class WritesFile:
    """Unpickling this runs ``open(path, 'w').write(...)``: a stand-in for any code in a pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.exec, (f"open({self.path!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def cartpole_ppo(tmp_path_factory):
    path = tmp_path_factory.mktemp("sb3") / "ppo_cartpole.zip"
    sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu").save(
        path
    )
    return path


def load(path, env_id="CartPole-v1", **settings):
    scenario = Gymnasium(env_id, subspaces=BOTH, **settings)
    policy = scenario.make_policy().modules()
    load_policy(path, policy, scenario.describe())
    return scenario, policy


def one_line_error(path, *words, env_id="CartPole-v1", **settings) -> str:
    with pytest.raises(ValueError) as error:
        load(path, env_id, **settings)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_a_zip_that_would_run_code_is_refused_and_runs_none(tmp_path, cartpole_ppo):
    live = tmp_path / "live.txt"
    run, args = WritesFile(live).__reduce__()  # what unpickling the payload would call
    run(*args)
    assert live.read_text() == "code ran"  # the payload is live

    from_weights, from_data = tmp_path / "from_weights.txt", tmp_path / "from_data.txt"
    crafted = tmp_path / "crafted.zip"
    with zipfile.ZipFile(cartpole_ppo) as real, zipfile.ZipFile(crafted, "w") as out:
        data = json.loads(real.read("data"))
        data["policy_kwargs"] = {
            ":type:": "<class 'dict'>",
            ":serialized:": base64.b64encode(pickle.dumps(WritesFile(from_data))).decode(),
        }
        out.writestr("data", json.dumps(data))
        buffer = io.BytesIO()
        torch.save({"action_net.weight": WritesFile(from_weights)}, buffer)
        out.writestr("policy.pth", buffer.getvalue())
    message = one_line_error(crafted, "policy.pth", "unpickling, refused")
    assert not from_weights.exists() and not from_data.exists(), message


def test_a_plain_zip_from_sb3_reads_with_its_serialized_fields_untouched(tmp_path, cartpole_ppo):
    """The real file's ``:serialized:`` fields (policy class, spaces, schedules) are not needed."""
    scenario, policy = load(cartpole_ppo)
    assert policy["actor"](TensorDict(observation=torch.zeros(3, 4), batch_size=[3]))["action"].shape == (3,)


def test_unsupported_algorithm(tmp_path):
    path = tmp_path / "dqn.zip"
    sb3.DQN("MlpPolicy", "CartPole-v1", seed=0, device="cpu").save(path)
    one_line_error(path, "algorithm 'dqn' is not supported", "PPO, A2C and SAC")


class Custom(sb3.common.torch_layers.BaseFeaturesExtractor):
    def __init__(self, observation_space):
        super().__init__(observation_space, features_dim=8)
        self.net = torch.nn.Linear(observation_space.shape[0], 8)

    def forward(self, observations):
        return self.net(observations)


def test_unsupported_policy_class(tmp_path):
    path = tmp_path / "custom.zip"
    kwargs = {"features_extractor_class": Custom}
    sb3.PPO("MlpPolicy", "CartPole-v1", policy_kwargs=kwargs, seed=0, device="cpu").save(path)
    one_line_error(path, "custom features extractor", "MlpPolicy, CnnPolicy and MultiInputPolicy")


def test_action_space_of_another_env(cartpole_ppo):
    one_line_error(
        cartpole_ppo, "acts in Discrete(2), but the environment in Discrete(3)", env_id="Acrobot-v1"
    )


def test_other_network_widths_name_the_setting(tmp_path):
    path = tmp_path / "narrow.zip"
    sb3.PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [32]}, seed=0, device="cpu").save(path)
    one_line_error(path, "set scenario hidden: [32] and activation: tanh")
    _, policy = load(path, hidden=[32])  # … and with it, the file loads
    assert policy["actor"].module[0].module.policy_net[0].weight.shape == (32, 4)


def test_a_ppo_file_for_a_sac_scenario(tmp_path):
    path = tmp_path / "ppo_pendulum.zip"
    sb3.PPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu").save(path)
    from lit_rl.training.sac import SACFineTuning

    with pytest.raises(ValueError, match="is an SB3 PPO policy: set scenario algorithm: ppo"):
        SACFineTuning(Gymnasium("Pendulum-v1", subspaces=BOTH, algorithm="sac"), pretrained=str(path))


def test_without_the_sb3_extra_an_sb3_file_says_how_to_install_it(monkeypatch, cartpole_ppo):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "stable_baselines3" else real(name, *a)
    )
    one_line_error(cartpole_ppo, "pip install 'lit_rl[sb3]'")


def test_the_cli_refuses_a_mismatched_policy_in_one_line(tmp_path, capsys):
    path = tmp_path / "acrobot.zip"
    sb3.PPO("MlpPolicy", "Acrobot-v1", seed=0, device="cpu").save(path)
    with pytest.raises(SystemExit) as exit_info:
        main([
            "fit", "--config", str(ROOT / "configs/base.yaml"),
            "--config", str(ROOT / "configs/env/applegym.yaml"),
            "--model.pretrained", str(path), "--run_dir", str(tmp_path / "run"),
        ])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert "acts in Discrete(3), but the environment in Discrete(2)" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_state_dict_of_your_own_actor_network(tmp_path):
    """``scenario.encoder`` (a class path) plus a plain state-dict file: π* from a torch module."""
    settings = {"encoder": {"class_path": "tests.gym_custom.TinyEncoder", "init_args": {"width": 16}}}
    scenario = Gymnasium("CartPole-v1", subspaces=BOTH, **settings)
    source = scenario.make_policy().modules()["actor"].module[0].module
    torch.save(source.state_dict(), tmp_path / "actor.pt")
    _, policy = load(tmp_path / "actor.pt", **settings)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(policy["actor"].module[0].module(obs), source(obs))
    wrong = Gymnasium("Acrobot-v1", subspaces=BOTH, **settings)
    with pytest.raises(ValueError, match="does not fit the actor network"):
        load_policy(tmp_path / "actor.pt", wrong.make_policy().modules(), wrong.describe())
    assert gymnasium.spec("CartPole-v1")  # the registry is untouched
