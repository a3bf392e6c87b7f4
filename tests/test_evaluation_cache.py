"""π*'s evaluation cache (lit_rl.evaluation_cache): computed once, reused while π*, the weights and
every setting are the same, recomputed when any changes; JSON beside π*, never unpickled."""

import json
import shutil

import torch

from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.evaluation_cache import PiStarEvaluations, cache_path
from lit_rl.models.policy_io import load_policy, save_policy
from lit_rl.scenarios.apple import AppleRetrieval
from tests.conftest import ROOT, fit


def pistar_actor(scenario, path):
    policy = scenario.make_policy().modules()
    load_policy(path, policy, scenario.describe())
    return policy, policy["actor"]


def test_cache_reuses_and_recomputes_when_pistar_or_a_setting_changes(pretrained_apple, tmp_path):
    pistar = tmp_path / "apple.pt"
    shutil.copy(pretrained_apple, pistar)
    scenario, evaluator = AppleRetrieval(), SubspaceEvaluator(episodes=8, seed=3)
    policy, actor = pistar_actor(scenario, pistar)
    computed = []

    def evaluate(scenario=scenario, evaluator=evaluator, actor=actor):
        computed.append(1)
        return evaluator.evaluate_all(scenario, actor)

    first, reused = PiStarEvaluations(pistar, scenario, evaluator, actor).evaluate(evaluate)
    assert not reused and first == SubspaceEvaluator(8, 3).evaluate_all(scenario, actor)
    again, reused = PiStarEvaluations(pistar, scenario, evaluator, actor).evaluate(evaluate)
    assert reused and again == first and len(computed) == 1

    for changed in (dict(evaluator=SubspaceEvaluator(9, 3)), dict(evaluator=SubspaceEvaluator(8, 4)),
                    dict(scenario=AppleRetrieval(length=31))):  # fmt: skip
        args = {"scenario": scenario, "evaluator": evaluator, "actor": actor, **changed}
        cache = PiStarEvaluations(pistar, args["scenario"], args["evaluator"], actor)
        _, reused = cache.evaluate(lambda args=args: evaluate(**args))
        assert not reused, changed
    assert len(computed) == 4
    payload = json.loads(cache_path(pistar).read_text())  # JSON, one entry per key
    assert len(payload["entries"]) == 4

    with torch.no_grad():  # another π* in the same file: recomputed
        next(actor.parameters()).add_(0.5)
    save_policy(pistar, policy, scenario.describe())
    _, reused = PiStarEvaluations(pistar, scenario, evaluator, actor).evaluate(evaluate)
    assert not reused and len(computed) == 5


def test_an_unreadable_cache_is_recomputed_and_rewritten(pretrained_apple, tmp_path):
    pistar = tmp_path / "apple.pt"
    shutil.copy(pretrained_apple, pistar)
    scenario, evaluator = AppleRetrieval(), SubspaceEvaluator(episodes=4, seed=0)
    _, actor = pistar_actor(scenario, pistar)
    cache_path(pistar).write_bytes(b"\x80\x04not json")  # e.g. a pickle: never loaded
    metrics, reused = PiStarEvaluations(pistar, scenario, evaluator, actor).evaluate(
        lambda: evaluator.evaluate_all(scenario, actor)
    )
    assert not reused and json.loads(cache_path(pistar).read_text())["entries"]
    assert PiStarEvaluations(pistar, scenario, evaluator, actor).get() == metrics


def test_runs_from_one_pistar_evaluate_it_once(pretrained_apple, tmp_path):
    """Two fine-tuning runs (other methods) from the same π*: the second's frame-0 point is the
    first's evaluation, read from the cache, not evaluated again."""
    pistar = tmp_path / "apple.pt"
    shutil.copy(pretrained_apple, pistar)
    counts = tmp_path / "evaluations.jsonl"
    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "trainer:\n  callbacks+:\n    - class_path: tests.evaluation_counter.CountEvaluations\n"
        f"      init_args: {{path: {counts}}}\n"
    )
    histories = []
    for method, run in (("ewc", "a"), ("bc", "b")):
        fit("--config", str(ROOT / f"configs/method/{method}.yaml"), "--config", str(probe),
            "--model.pretrained", str(pistar), "--model.budget.frames", "6400",
            "--model.evaluation.every_frames", "6400", "--model.evaluation.episodes", "16",
            "--run_dir", str(tmp_path / run))  # fmt: skip
        histories.append(json.loads((tmp_path / run / "summary.json").read_text())["eval_history"])
    calls = [json.loads(line) for line in counts.read_text().splitlines()]
    assert sorted(c["subspace"] for c in calls if c["frames"] == 0) == ["close", "far"]
    assert len([c for c in calls if c["frames"] == 6400]) == 4  # the trained weights: every run
    assert histories[0][0] == histories[1][0] and histories[0][0]["env_steps"] == 0
