"""`make bench` cannot rot: every section runs here at its ``--smoke`` size, against the current
code, and its figures go through the report's table (their values mean nothing at this size)."""

import json

import pytest

from bench import run


@pytest.mark.parametrize("name", list(run.SETTINGS))
def test_every_bench_section_runs_at_its_smoke_size(name, tmp_path):
    outcome = run.run_section(name, run.SETTINGS[name][run.TIERS.index("smoke")], tmp_path)
    log = (tmp_path / f"{name}.log").read_text()[-3000:]
    assert outcome["ok"], f"{outcome.get('error')}\n{log}"
    table = run.rows({name: outcome})
    assert table, f"section {name} gave no row of the table"
    report = {"mode": "smoke", "machine": run.machine(), "sections": {name: outcome}, "rows": table,
              "total_s": outcome["seconds"], "load_average_end": [0.0, 0.0, 0.0]}  # fmt: skip
    text = run.markdown(json.loads(json.dumps(report, default=str)))
    assert all(row["figure"] in text for row in table)


def test_the_run_says_how_long_it_takes_and_when_it_overwrites_a_tracked_file(tmp_path, capsys):
    out = tmp_path / "results"
    assert "at most" in run.expected_duration(["apple"], "smoke", out)
    out.with_suffix(".json").write_text(json.dumps({"mode": "smoke", "sections": {"apple": {"seconds": 120}},
                                                    "machine": {"load_average_start": [3.5]}}))  # fmt: skip
    assert run.expected_duration(["apple"], "smoke", out).startswith("expected ≈ 2 min")
    assert run.git_tracked(run.HERE / "results.md") and not run.git_tracked(out.with_suffix(".md"))
