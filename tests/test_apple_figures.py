"""`make apple-figures` end to end with a tiny budget: real π* pre-training and fine-tuning through the
CLI for two (M, c) cells and two seeds, the actor trace, both figures, and a second call that runs
nothing (resumable)."""

import json

import pytest

from lit_rl.figures import apple as apple_figures

SMALL = ["--lengths", "4", "6", "--scales", "1.0", "--scale-length", "4", "--pretrain-length", "4"]
SEEDS = ["--seeds", "0", "1"]
BUDGETS = ["--budget", "12800", "--pretrain-budget", "12800", "--jobs", "1"]


def test_cells_share_the_common_cell():
    todo = apple_figures.cells([10, 30], [0.1, 1.0], [0, 1], default_scale=0.1, scale_length=30)
    assert [c.name for c in todo] == [
        "M10-c0.1-s0", "M10-c0.1-s1", "M30-c0.1-s0", "M30-c0.1-s1", "M30-c1-s0", "M30-c1-s1",
    ]  # fmt: skip


def test_tiny_study_writes_both_figures_and_resumes(tmp_path, monkeypatch, capsys):
    runs, out = tmp_path / "runs", tmp_path / "reports"
    args = ["--runs", str(runs), "--out", str(out), *SMALL, *SEEDS, *BUDGETS]
    apple_figures.main(args)
    for name in ("M4-c0.1-s0", "M6-c0.1-s1", "M4-c1-s1"):
        finetune = runs / name / "finetune"
        summary = json.loads((finetune / "summary.json").read_text())
        assert summary["finished"] and summary["env_steps"] == 12800 and summary["method"] == "none"
        trace = json.loads((finetune / "logistic_actor.json").read_text())
        assert trace["env_steps"][0] == 0 and trace["env_steps"][-1] == 12800 and len(trace["w"]) == 3
    config = (runs / "M6-c0.1-s1" / "finetune" / "config.yaml").read_text()
    assert "length: 6" in config and "scale: 0.1" in config
    # one π* per (c, seed), pre-trained in the --pretrain-length corridor, starts every M
    for star in ("c0.1-s0", "c0.1-s1", "c1-s0", "c1-s1"):
        assert (runs / "pi_star" / star / "pi_star.pt").is_file()
    assert str(runs / "pi_star" / "c0.1-s1" / "pi_star.pt") in config
    assert "length: 4" in (runs / "pi_star" / "c0.1-s1" / "pretrain" / "config.yaml").read_text()
    assert not (runs / "pi_star" / "c0.1-s1" / "pretrain" / "logistic_actor.json").exists()
    assert (out / "apple_fig10_length.png").stat().st_size > 10_000
    assert (out / "apple_fig11_scale.png").stat().st_size > 10_000
    text = (out / "apple_figures.md").read_text()
    assert "| 4 | 2 |" in text and "| 6 | 2 |" in text and "| 1 | 2 |" in text

    # a second call finds every run finished and launches nothing
    def no_launch(*_args, **_kwargs):
        raise AssertionError("a finished run was launched again")

    monkeypatch.setattr(apple_figures, "launch", no_launch)
    capsys.readouterr()
    apple_figures.main(args)
    printed = capsys.readouterr().out
    assert printed.count(": skipped (") == 10 and ": ran (" not in printed


def test_an_unfinished_run_is_continued_not_restarted(tmp_path, monkeypatch):
    cell = apple_figures.Cell(4, 0.1, 0)
    run = tmp_path / cell.name / "finetune"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "summary.json").write_text(json.dumps({"finished": False}))
    launched = []
    monkeypatch.setattr(apple_figures, "launch", lambda args, log, in_process: launched.append(args))
    assert apple_figures.finetune(cell, tmp_path, 1000, [], True) == "resumed"
    assert launched[0][-2:] == ["--ckpt_path", "last"] and (run / "checkpoints").is_dir()
    (run / "summary.json").write_text(json.dumps({"finished": True}))
    assert apple_figures.finetune(cell, tmp_path, 1000, [], True) == "skipped"
    # a π* run that finished but lost its policy file is made again
    star = apple_figures.PiStar(0.1, 0)
    policy = apple_figures.policy_path(tmp_path, 0.1, 0)
    (policy.parent / "pretrain").mkdir(parents=True)
    (policy.parent / "pretrain" / "summary.json").write_text(json.dumps({"finished": True}))
    assert apple_figures.pretrain(star, tmp_path, 30, None, [], True) == "ran"
    assert str(policy) in launched[-1] and "--ckpt_path" not in launched[-1]
    with pytest.raises(SystemExit):
        apple_figures.main(["--jobs", "0"])
