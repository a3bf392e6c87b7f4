"""The headline phenomenon on AppleRetrieval: vanilla fine-tuning forgets FAR, EWC and BC keep it.

π* is pre-trained on FAR (phase 2) only. While fine-tuning learns CLOSE (phase 1) it moves the bias
both phases share, so vanilla fine-tuning's FAR return collapses (it re-learns FAR only late). EWC,
whose Fisher weights the bias heavily, keeps FAR, and so does behavioural-cloning replay of π*'s
FAR states. Judged over the whole run (its minimum and mean), with fixed seeds and margins far
wider than seed noise.
"""

import json

import pytest

from tests.conftest import ROOT, fit

BUDGET = "500000"


def far_curve(run) -> list[float]:
    summary = json.loads((run / "summary.json").read_text())
    return [entry["far"]["return_mean"] for entry in summary["eval_history"]]


@pytest.mark.parametrize("seed", [0, 1])
def test_vanilla_forgets_far_while_ewc_and_bc_keep_it(pretrained_apple, tmp_path, seed):
    curves = {}
    for method in ("none", "ewc", "bc"):
        run = tmp_path / method
        fit("--config", str(ROOT / f"configs/method/{method}.yaml"),
            "--model.pretrained", str(pretrained_apple), "--model.budget_frames", BUDGET,
            "--seed_everything", str(seed), "--run_dir", str(run))  # fmt: skip
        curves[method] = far_curve(run)
    pretrained_far = curves["none"][0]
    assert pretrained_far > 25, "π* should solve FAR (return ≈ 30) before fine-tuning"
    assert min(curves["none"]) < 0, f"vanilla should forget FAR: {curves['none']}"
    mean = {method: sum(curve) / len(curve) for method, curve in curves.items()}
    for method in ("ewc", "bc"):
        assert min(curves[method]) > 0.8 * pretrained_far, f"{method} should keep FAR: {curves[method]}"
        assert mean[method] > mean["none"] + 10
