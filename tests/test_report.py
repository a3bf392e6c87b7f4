"""The downstream score (`transfer`) in summaries and `make report`, and the report's preset grouping.

`transfer` is the mean CLOSE return over every evaluation of a run; the report groups runs by env
preset so a paper-scale and a CPU-scale preset of one environment never share a row, averages seeds
per (preset, method) with their spread, and leaves pre-training runs out.
"""

import json
import re
from types import SimpleNamespace

import pytest

from callbacks.run_summary import RunSummary, curve_stats, transfer
from callbacks.subspace_evaluation import SubspaceEvaluation
from lit_rl.figures import report


def history(close: list[float], far: list[float], every: int = 1000) -> list[dict]:
    return [
        {
            "env_steps": i * every,
            "close": {"return_mean": c, "success_rate": 0.0},
            "far": {"return_mean": f, "success_rate": 1.0},
        }
        for i, (c, f) in enumerate(zip(close, far))
    ]


def summary(env, method, seed, close, far, preset=None, stage=None) -> dict:
    hist = history(close, far)
    out = {
        "env": env,
        "method": method,
        "seed": seed,
        "env_steps": hist[-1]["env_steps"],
        "finished": True,
        "pretrained": hist[0],
        "eval_history": hist,
    }
    if preset is not None:
        out["preset"] = preset
    if stage is not None:
        out["stage"] = stage
    return out


def hparams(**values) -> SimpleNamespace:
    """Stands in for Lightning's hparams: attribute access and ``get``."""
    return SimpleNamespace(**values, get=values.get)


def write(runs, name, content: dict) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "summary.json").write_text(json.dumps(content))


def row(section: str, start: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(start))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_transfer_is_the_mean_close_return_over_all_evaluations():
    hist = history(close=[-80.0, -20.0, 10.0, 30.0], far=[30.0, -25.0, 0.0, 20.0])
    # the π* evaluation counts: (−80 − 20 + 10 + 30) / 4, not the final value and not 3 points
    assert transfer(hist) == pytest.approx(-15.0)
    stats = curve_stats(hist)
    assert stats["close"] == pytest.approx({"start": -80.0, "final": 30.0, "min": -80.0, "mean": -15.0})
    assert stats["far"] == pytest.approx({"start": 30.0, "final": 20.0, "min": -25.0, "mean": 6.25})
    # learning CLOSE earlier gives a higher transfer at the same final return
    assert transfer(history([-80, 30, 30, 30], [30] * 4)) > transfer(history([-80, -80, -80, 30], [30] * 4))
    assert transfer([]) is None and transfer(history([1.0], [2.0]), subspace="other") is None


def test_run_summary_writes_preset_stage_and_transfer(tmp_path):
    evaluation = SubspaceEvaluation()
    evaluation.history = history(close=[-80.0, 0.0, 20.0], far=[30.0, -10.0, 5.0])
    trainer = SimpleNamespace(
        is_global_zero=True, callbacks=[evaluation], default_root_dir=str(tmp_path), global_step=3
    )
    model = SimpleNamespace(
        scenario=SimpleNamespace(name="apple"),
        method_name="ewc",
        hparams=hparams(seed=1, pretrained="pretrained/apple.pt"),
        budget=SimpleNamespace(frames=2000),
        env_frames=2000,
        nonfinite_updates=0,
    )
    RunSummary(preset="apple")._write(trainer, model, finished=True)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["preset"] == "apple" and written["stage"] == "finetune"
    assert written["transfer"] == pytest.approx(-20.0)
    assert written["curve"]["far"]["min"] == -10.0 and written["curve"]["close"]["final"] == 20.0
    model.hparams = hparams(seed=1, pretrained=None)
    RunSummary()._write(trainer, model, finished=True)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["preset"] is None and written["stage"] == "pretrain"


def test_report_groups_by_preset_averages_seeds_and_skips_pretraining(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "reports"
    write(runs, "apple-none-s0", summary("apple", "none", 0, [-80, 20, 24], [30, -25, -15], preset="apple"))
    write(runs, "apple-none-s1", summary("apple", "none", 1, [-80, 10, 20], [30, -20, -5], preset="apple"))
    write(runs, "apple-ewc-s0", summary("apple", "ewc", 0, [-80, -40, 22], [30, 25, 28], preset="apple"))
    # the same env and method under two presets: never averaged together
    write(runs, "mz-bc-s0", summary("montezuma", "bc", 0, [0, 100, 200], [50, 40, 45], preset="montezuma"))
    write(
        runs,
        "mzp-bc-s0",
        summary("montezuma", "bc", 0, [0, 1000, 3000], [50, 60, 70], preset="montezuma_paper"),
    )
    # an old summary without a preset falls back to its env
    write(runs, "nethack-ks-s0", summary("nethack", "ks", 0, [1, 2, 3], [4, 5, 6]))
    # pre-training runs (new: stage; old: only the folder name) are not fine-tuning results
    write(
        runs,
        "apple-pretrain-s0",
        summary("apple", "none", 0, [0, 0, 0], [0, 20, 30], preset="apple", stage="pretrain"),
    )
    write(runs, "apple-pretrain-s1", summary("apple", "none", 1, [0, 0, 0], [0, 20, 30]))  # fmt: skip

    groups = report.group_by_preset(report.load_summaries(runs))
    assert set(groups) == {"apple", "montezuma", "montezuma_paper", "nethack"}
    assert {m: [r["seed"] for r in rs] for m, rs in groups["apple"].items()} == {"none": [0, 1], "ewc": [0]}

    report.write_report(runs, out)
    text = (out / "report.md").read_text()
    for preset in groups:
        assert f"## {preset}\n" in text and (out / f"{preset}.png").is_file()
    apple = text.split("## apple\n")[1].split("\n## ")[0]
    cell = dict(zip(cells(row(apple, "| method")), cells(row(apple, "| none"))))
    # seeds 0 and 1 of vanilla (π*'s frame-0 evaluation included): transfer −12 and −16.67
    assert cell["seeds"] == "2"
    assert cell["transfer"] == "-14.3 ± 3.3"
    assert cell["close_final"] == "22.0 ± 2.8"
    assert cell["far_min"] == "-22.5 ± 3.5"
    assert cell["far_mean"] == "-0.8 ± 3.5"
    # π*'s own evaluation is the reference row
    pi_star = row(apple, "| π*")
    assert re.search(r"\|\s*30\.0\s*\|", pi_star) and "-80.0" in pi_star
    paper = text.split("## montezuma_paper\n")[1].split("\n## ")[0]
    assert "| 3000.0 |" in paper and "200.0" not in paper  # one seed: no spread shown


def test_training_visitation_sums_episodes_over_windows(tmp_path):
    """Episode shares are Σ episodes reaching Dlvl ≥ k / Σ ended episodes over all logged windows
    (a window with no ended episode counts nothing), and the FAR frame share is the mean."""
    from lit_rl.figures.report import training_visitation

    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "step,train/visit/far,train/visit/episodes,train/visit/episodes_dlvl>=2,train/visit/episodes_dlvl>=4\n"
        "1,0.1,4,2,0\n"
        "2,0.3,0,0,0\n"
        "3,,6,3,1\n"
        "4,0.2,,,\n"
    )
    shares = training_visitation(metrics)
    assert shares == {"far_frames": pytest.approx(0.2), "dlvl>=2": 0.5, "dlvl>=4": 0.1}
    assert training_visitation(tmp_path / "missing.csv") == {}


def test_study_tables_and_figures_carry_references_standard_errors_and_visitation(tmp_path):
    """`make study`'s report: a random-policy row from runs/references.json, the final return with
    both spreads (over seeds, and the evaluation's own standard error std/√episodes), the gap to
    π*, one figure per subspace (paper Figs 3a and 5) and the level-visitation figure (Fig. 4)."""
    runs, out = tmp_path / "runs", tmp_path / "reports"
    for seed, far in [(0, [30, 10, 12]), (1, [30, 14, 16])]:
        content = summary("nethack", "none", seed, [5, 8, 9], far, preset="nethack_study")
        for entry in content["eval_history"]:
            for subspace in ("close", "far"):
                entry[subspace].update(return_std=8.0, episodes=64)
        write(runs, f"nethack_study-none-s{seed}", content)
        (runs / f"nethack_study-none-s{seed}" / "metrics.csv").write_text(
            "step,train/visit/far,train/visit/episodes,train/visit/episodes_dlvl>=2,train/visit/episodes_dlvl>=4\n"
            f"1,0.0,10,{3 + seed},0\n"
        )
    random_policy = {"close": {"return_mean": 1.5, "return_std": 4.0, "episodes": 64},
                     "far": {"return_mean": 2.5, "return_std": 4.0, "episodes": 64}}  # fmt: skip
    (runs / "references.json").write_text(json.dumps({"random": random_policy}))

    report.write_report(runs, out)
    text = (out / "report.md").read_text()
    assert cells(row(text, "| random policy"))[3:5] == ["1.5", "1.5"]  # close final, min
    precision = text.split("| policy |")[1]
    cell = dict(zip(cells("| policy |" + precision.splitlines()[0]), cells(row(precision, "| none"))))
    assert cell["far_final"] == "14.0 ± 2.8"  # seeds: 12 and 16
    assert cell["far_eval_se"] == "1.0"  # 8 / √64
    assert cell["far_vs_pi*"] == "-16.0"  # π* scored 30 on FAR
    assert cells(row(precision, "| random policy"))[4:6] == ["2.5", "0.5"]
    for name in ("nethack_study_close", "nethack_study_far", "nethack_study_visitation"):
        assert (out / f"{name}.png").is_file() and f"]({name}.png)" in text
    assert report.load_summaries(runs)[0]["visitation"]["dlvl>=2"] == pytest.approx(0.3)
