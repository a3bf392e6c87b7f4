"""RoboticSequence's paper preset (issue 25, App. B.3): retention data from π*'s fresh rollouts, one
SAC update per environment step, and the log-likelihood PCA's floor. Real Meta-World and the real
CLI (configs resolved with ``--print_config``)."""

import pytest
import torch

from lit_rl.figures.robotic import LOGLIK_FLOOR, loglik_pca
from lit_rl.models.policy_io import save_policy
from lit_rl.pretraining import robotic_rollouts
from lit_rl.scenarios.robotic import PRETRAIN_START, RoboticSequence, load_transitions
from lit_rl.training.sac import TRANSITION_KEYS, SACFineTuning, _loglik
from lit_rl.training.settings import Collection
from tests.test_presets import resolve

PAPER = ("env/robotic.yaml", "env/robotic_paper.yaml")


def model(config: dict) -> dict:
    return config["model"]["init_args"]


def test_paper_preset_reads_fresh_rollouts_and_updates_once_per_step(capsys):
    """EM, BC, EWC and the log-likelihood set all read the scenario's ``pretraining_buffer``: in
    the paper preset that is the fresh-rollout file, not π*'s training buffer; one SAC update per
    environment step there, 0.25 in the CPU preset."""
    paper = model(resolve(capsys, *PAPER, "method/robotic/em.yaml"))
    assert paper["scenario"]["init_args"]["pretraining_buffer"] == "pretrained/robotic.rollouts.pt"
    assert paper["sac"]["updates_per_frame"] == 1.0
    assert paper["loglik"]["every_frames"] == 50_000
    cpu = model(resolve(capsys, "env/robotic.yaml"))
    assert cpu["sac"]["updates_per_frame"] == 0.25
    assert cpu["scenario"]["init_args"]["pretraining_buffer"] == "pretrained/robotic.buffer.pt"


@pytest.mark.slow  # ≈ 15 s on a quiet core, a minute at load 20: two SAC modules and Meta-World
def test_fresh_rollouts_are_pi_stars_own_transitions_on_its_stages(tmp_path):
    """The tool plays the exported π* on the FAR stages and writes them in the replay-file format:
    every stage is peg-unplug-side or push-wall, every key the SAC buffer keeps is there, and the
    actions are π*'s (far likelier under π* than under another actor of the same shape)."""
    torch.manual_seed(0)
    scenario = RoboticSequence(pretraining_buffer=None)
    pi_star = SACFineTuning(scenario, collection=Collection(start=PRETRAIN_START))
    heads = pi_star.policy["actor"].module[0].module.heads.linear
    with torch.no_grad():  # a recognisable π*: μ = 0.5, σ = e⁻³ in every state
        heads.weight.zero_()
        heads.bias.copy_(torch.tensor([0.5] * 4 + [-3.0] * 4).repeat(4))
    save_policy(tmp_path / "pi.pt", pi_star.exported, scenario.describe())
    out = tmp_path / "pi.rollouts.pt"
    robotic_rollouts.main(
        ["--policy", str(tmp_path / "pi.pt"), "--frames", "500", "--envs", "2", "--out", str(out)]
    )
    data = load_transitions(out)
    assert len(data) == 500
    assert set(data["stage"].unique().tolist()) <= {2, 3}
    assert all(key in data.keys(True) for key in TRANSITION_KEYS)
    other = SACFineTuning(scenario, collection=Collection(start=PRETRAIN_START))
    with torch.no_grad():
        own = _loglik(pi_star.policy["actor"], data).mean()
        foreign = _loglik(other.policy["actor"], data).mean()
    assert own > foreign + 10.0


def test_the_loglik_pca_floors_values_before_fitting():
    """Two runs that differ only in how far below the floor some transitions fall (−60 against
    −10⁵) must land on the same points: the floor is applied before the PCA, so a run that lost
    push-wall cannot stretch the axes by its outliers."""
    torch.manual_seed(0)
    base = torch.randn(4, 20) - 2.0
    mild, wild = base.clone(), base.clone()
    mild[2:, :5], wild[2:, :5] = -60.0, -1e5
    keeper = torch.randn(4, 20) - 1.0
    projected = loglik_pca([mild, keeper, wild])
    assert torch.allclose(projected[0], projected[2], atol=1e-4)
    assert LOGLIK_FLOOR == -50.0


def test_the_critic_probe_reads_returns_along_each_collector_row():
    """`robotic_critic.returns`: the rollouts file is [batches, envs, 250] flattened, so each env's
    stream is its own row; a return runs back from its episode's end and restarts there, and steps
    after the row's last episode end have no complete return."""
    from tensordict import TensorDict

    from lit_rl.figures.robotic_critic import returns

    done = torch.zeros(500, 1, dtype=torch.bool)
    done[99] = True  # env 0 ends an episode at its step 99; env 1 (indices 250…499) never does
    data = TensorDict({"next": {"reward": torch.ones(500, 1), "done": done}}, batch_size=[500])
    g, complete = returns(data, envs=2, gamma=0.5)
    assert complete[:100].all() and not complete[100:].any()
    assert g[99].item() == 1.0 and abs(g[0].item() - 2.0) < 1e-6  # 1 + 0.5 + 0.25 + … over 100 steps
