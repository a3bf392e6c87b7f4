"""Issue 14, point 2: V-trace targets (``model.advantage.estimator: vtrace``) on real collected
NetHack batches.

With no lag (the behaviour weights are the learner's) V-trace is GAE with λ = 1; with a lag the
importance weights π/μ of the stored actions are truncated at ρ̄ (TD errors) and c̄ (traces). The
lagged case is checked against IMPALA's eq. 1 written out here as a backward recursion.
"""

from __future__ import annotations

import pytest
import torch
from lightning import Trainer

from lit_rl.training.vtrace import target_log_prob
from tests.test_throughput_passes import collect, module, teacher_file  # noqa: F401  (fixture)


def impala_targets(batch, log_pi, value, next_value, gamma, rho_bar, c_bar):
    """v_s and A_s of IMPALA eq. 1 per row: v_s = V_s + δ_s + γ c_s (v_{s+1} − V_{s+1}) inside an
    episode, δ_t = ρ_t (r_t + γ V(s_{t+1}) (1 − terminal) − V_t)."""
    ratio = (log_pi - batch["action_log_prob"]).exp().unsqueeze(-1)
    rho, c = ratio.clamp(max=rho_bar), ratio.clamp(max=c_bar)
    reward, done = batch["next", "reward"], batch["next", "done"].float()
    alive = 1 - batch["next", "terminated"].float()
    delta = rho * (reward + gamma * alive * next_value - value)
    vs = torch.zeros_like(value)
    correction = torch.zeros_like(value[:, 0])  # v_{s+1} − V(s_{s+1}) of the same episode
    for t in reversed(range(value.shape[1])):
        correction = delta[:, t] + gamma * (1 - done[:, t]) * c[:, t] * correction
        vs[:, t] = value[:, t] + correction
    following = torch.cat([vs[:, 1:], next_value[:, -1:]], 1)
    following = torch.where(done.bool(), next_value, following)
    return vs, rho * (reward + gamma * alive * following - value)


@pytest.fixture
def vtrace_model(teacher_file):  # noqa: F811
    torch.manual_seed(2)
    return module(teacher_file, advantage={"gae_lambda": 1.0, "estimator": "vtrace"})


def test_without_lag_vtrace_is_gae_lambda_one(vtrace_model, one_torch_thread):
    batch = collect(vtrace_model)
    assert batch["next", "done"][:, :-1].any(), "the test needs episode ends inside rows"
    gae = batch.clone()
    with torch.no_grad():
        vtrace_model.compute_advantage(batch)
        gae.set(("next", "state_value"), vtrace_model._next_values(gae))
        vtrace_model.stored_value_advantage(gae)  # TorchRL's GAE, λ = 1
    torch.testing.assert_close(batch["value_target"], gae["value_target"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch["advantage"], gae["advantage"], rtol=1e-5, atol=1e-5)
    assert vtrace_model._vtrace_clipped == 0.0


@pytest.mark.parametrize("rho_bar, c_bar", [(1.0, 1.0), (0.95, 1.05)])
def test_with_lag_the_importance_weights_are_truncated(teacher_file, one_torch_thread, rho_bar, c_bar):  # noqa: F811
    torch.manual_seed(3)
    model = module(
        teacher_file,
        advantage={
            "gae_lambda": 1.0,
            "estimator": "vtrace",
            "vtrace_rho_bar": rho_bar,
            "vtrace_c_bar": c_bar,
        },
    )
    batch = collect(model)
    with torch.no_grad():  # the learner moved on after these frames were collected: a lag
        for parameter in model.policy.behaviour_parameters().values():
            parameter.add_(0.05 * torch.randn_like(parameter))
        log_pi = target_log_prob(model.policy["actor"], batch)
        ratio = (log_pi - batch["action_log_prob"]).exp()
        assert (ratio > max(rho_bar, c_bar)).any() and (ratio < min(rho_bar, c_bar)).any()
        next_value = model._next_values(batch)
        model.compute_advantage(batch)
        vs, advantage = impala_targets(batch, log_pi, batch["state_value"], next_value, model.advantage.gamma,
                                       rho_bar, c_bar)  # fmt: skip
    torch.testing.assert_close(batch["value_target"], vs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch["advantage"], advantage, rtol=1e-5, atol=1e-5)
    assert model._vtrace_clipped == pytest.approx((ratio > rho_bar * 1.0001).float().mean().item())
    # untruncated weights give other targets: the truncation is what made them equal
    unclipped, _ = impala_targets(
        batch, log_pi, batch["state_value"], next_value, model.advantage.gamma, 1e9, 1e9
    )
    assert not torch.allclose(unclipped, vs, rtol=1e-5, atol=1e-5)


def test_a_vtrace_run_trains(teacher_file, one_torch_thread):  # noqa: F811
    model = module(
        teacher_file, advantage={"gae_lambda": 1.0, "estimator": "vtrace"}, budget={"frames": 2 * 64}
    )
    before = {k: v.clone() for k, v in model.policy.behaviour_parameters().items()}
    Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False).fit(model)  # fmt: skip
    assert int(model.env_frames) == 128 and model._vtrace_clipped is not None
    assert any(not torch.equal(v, before[k]) for k, v in model.policy.behaviour_parameters().items())


def test_bad_settings_fail_in_one_line(teacher_file):  # noqa: F811
    with pytest.raises(ValueError, match="gae_lambda"):
        module(teacher_file, advantage={"gae_lambda": 0.95, "estimator": "vtrace"})
    with pytest.raises(ValueError, match="model.advantage.estimator='retrace'"):
        module(teacher_file, advantage={"estimator": "retrace"})
    assert module(teacher_file).advantage.estimator == "gae"  # the default keeps GAE
