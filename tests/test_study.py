"""``make study ENV=nethack`` (lit_rl.study): the smoke study runs every stage to a report with every
method and subspace, each stage skips what is done, a started run is resumed, and a study killed
mid-way continues when the same command runs again (slow)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lit_rl import study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["configs/study/nethack.yaml", "configs/study/nethack_smoke.yaml"]
METHODS = ("none", "bc", "ks", "ewc")


def smoke_config(tmp_path: Path, **changes) -> list[str]:
    """The smoke study's config files with its root moved into ``tmp_path``."""
    overlay = tmp_path / "root.yaml"
    overlay.write_text(yaml.safe_dump({"root": str(tmp_path / "study"), **changes}))
    args = []
    for path in [*STUDY, str(overlay)]:
        args += ["--config", path]
    return args


def run_study(tmp_path: Path, **changes) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lit_rl.study", *smoke_config(tmp_path, **changes)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_run_state_tells_finished_started_and_new_runs(tmp_path):
    run = tmp_path / "nethack_study-ks-s0"
    assert study.run_state(run) == "fresh"
    run.mkdir()
    (run / "config.yaml").write_text("{}")  # stopped before its first checkpoint: starts over
    assert study.run_state(run) == "fresh"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "summary.json").write_text(json.dumps({"finished": False}))
    assert study.run_state(run) == "resume"
    (run / "summary.json").write_text(json.dumps({"finished": True}))
    assert study.run_state(run) == "done"


def test_fine_tuning_commands_resume_started_runs_and_compose_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = study.load_config([Path(p) for p in STUDY])
    config["root"] = str(tmp_path)
    runner = study.Study(config)
    fresh = runner.finetune_args("ks", 1, tmp_path / "run", resume=False)
    resumed = runner.finetune_args("ewc", 0, tmp_path / "run", resume=True)
    assert "--ckpt_path" not in fresh and resumed[-2:] == ["--ckpt_path", "last"]
    configs = [fresh[i + 1] for i, arg in enumerate(fresh) if arg == "--config"]
    assert configs[:3] == ["configs/base.yaml", "configs/env/nethack.yaml", "configs/env/nethack_study.yaml"]
    assert configs[3] == "configs/method/ks.yaml" and configs[-1] == str(tmp_path / "overrides.yaml")
    # the smoke study's own EWC (small Fisher) comes before the generic one
    assert "configs/method/nethack_smoke/ewc.yaml" in resumed
    assert runner.env_config["model"]["scenario"]["init_args"]["far_dlvl"] == 4


def test_bad_study_settings_stop_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    for changes, named in [({"methods": ["none", "kickstart"]}, "kickstart"), ({}, "--stages")]:
        extra = ["--stages", "record,fine-tune"] if named == "--stages" else []
        with pytest.raises(SystemExit) as stop:
            study.main([*smoke_config(tmp_path, **changes), *extra])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and error.count("\n") == 1 and named in error, error


def test_smoke_study_reports_every_method_and_subspace(tmp_path):
    """The whole command at tiny sizes: record → π* → states → four methods → reference → report;
    π* is evaluated once per subspace for the whole study (its cache beside π*), and every run's
    frame-0 point is that evaluation."""
    counts = tmp_path / "evaluations.jsonl"
    counter = {"class_path": "tests.evaluation_counter.CountEvaluations", "init_args": {"path": str(counts)}}
    result = run_study(tmp_path, overrides={"trainer": {"callbacks+": [counter]}})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    root = tmp_path / "study"
    calls = [json.loads(line) for line in counts.read_text().splitlines()]
    pistar = sorted(c["subspace"] for c in calls if c["frames"] == 0)
    assert pistar == ["close", "far"], pistar  # not once per run: 4 runs share π*'s evaluation
    assert len({c["run"] for c in calls}) == len(METHODS)
    assert (root / "pretrained" / "nethack_study.pt.evaluations.json").is_file()
    firsts = [
        json.loads((root / "runs" / f"nethack_study-{m}-s0" / "summary.json").read_text())["eval_history"][0]
        for m in METHODS
    ]
    assert firsts[0]["env_steps"] == 0 and all(first == firsts[0] for first in firsts)
    report = (root / "reports" / "report.md").read_text()
    section = report.split("## nethack_study\n")[1]
    for method in METHODS:
        assert f"\n| {method} | 1 | 256 |" in section, method
    for subspace in ("close", "far"):
        assert f"{subspace}_final" in section and f"{subspace}_eval_se" in section
        assert (root / "reports" / f"nethack_study_{subspace}.png").is_file()
    assert "| random policy |" in section and "| π* (not fine-tuned) |" in section
    assert (root / "reports" / "nethack_study_visitation.png").is_file()
    times = json.loads((root / "study_times.json").read_text())
    assert set(times) == set(study.STAGES)


@pytest.mark.slow
def test_killed_study_continues_where_it_stopped(tmp_path):
    """SIGKILL the study (and its runs) once a fine-tuning run has saved a checkpoint; the same
    command then resumes that run from it and finishes the study."""
    changes = {"overrides": {"model": {"budget": {"frames": 2048}}}}
    command = [sys.executable, "-m", "lit_rl.study", *smoke_config(tmp_path, **changes)]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    runs = tmp_path / "study" / "runs"
    deadline = time.monotonic() + 600
    while not list(runs.glob("nethack_study-*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    started = [p.parents[1] for p in runs.glob("nethack_study-*/checkpoints/last.ckpt")]
    assert not all(study.run_state(run) == "done" for run in started)

    result = run_study(tmp_path, **changes)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "record: done" in result.stdout and "pretrain: done" in result.stdout
    assert "--ckpt_path last" in result.stdout  # a started run resumed, not restarted
    for method in METHODS:
        summary = json.loads((runs / f"nethack_study-{method}-s0" / "summary.json").read_text())
        assert summary["finished"] and summary["env_steps"] >= 2048
    # once everything is done, the command only re-draws the report
    again = run_study(tmp_path, **changes)
    assert again.returncode == 0
    assert "reference: done" in again.stdout and "$ " not in again.stdout
    assert all(f"nethack_study-{m}-s0 done" in again.stdout for m in METHODS)
